"""Renders the Chinese dialog fixtures (run once; needs a CJK font: apt-get install fonts-wqy-microhei).

    .venv/bin/python tests/data/ocr/make_zh.py
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from test_ocr import dialog  # noqa: E402

FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
DIALOGS = {
    "zh_payment": (("支付失败", ["您的银行卡被拒绝：余额不足。", "请换一张卡或联系您的银行。"], ["取消", "重试"]), 480, False),
    "zh_login": (("登录失败", ["密码错误，您还可以尝试3次。"], ["忘记密码", "确定"]), 400, True),
    "zh_upload": (("上传失败", ["文件超过20MB的大小限制。", "请压缩后重新上传。"], ["关闭", "重新上传"]), 360, False),
}

if __name__ == "__main__":
    for name, (texts, width, dark) in DIALOGS.items():
        img = dialog(*texts, width=width, dark=dark, font=FONT)
        img.quantize(16).save(HERE / f"{name}.png", optimize=True)
    (HERE / "zh_dialogs.json").write_text(json.dumps({n: t for n, (t, _, _) in DIALOGS.items()}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

"""make bench, multilingual figures (called from bench/run.py; ``python -m bench.multilingual`` alone).

With the real models — all-MiniLM-L6-v2 (``bert``) and USE-multilingual v3 (``multilingual``), through
their stage objects — on support sentences written for this bench (``PAIRS``: 36 Chinese sentences and
their English translations):

- half-sentence -> sentence: the first half of each sentence (characters for Chinese, words for English)
  as a query among all sentences of its language; the share whose sentence is at rank 1;
- cross-lingual: each Chinese sentence against all English ones (and back); the share whose translation
  is at rank 1;
- speed: texts/s of each stage over the 72 sentences x 8, and the latency of one text (what a
  /v1/predict text request spends in the stage).
"""

from __future__ import annotations

import time

import numpy as np

PAIRS = [
    ("我无法登录我的账户", "I cannot log in to my account"),
    ("重置密码后还是登录不了", "I still can't sign in after resetting my password"),
    ("收不到短信验证码", "I never receive the SMS verification code"),
    ("我的账户被锁定了", "My account has been locked"),
    ("我忘记了用户名", "I forgot my username"),
    ("两步验证的代码总是错误", "The two-factor code is always rejected"),
    ("我想修改绑定的邮箱地址", "I want to change the email address on my account"),
    ("登录页面一直在转圈", "The login page keeps spinning"),
    ("我的账户被别人盗用了", "Someone else has taken over my account"),
    ("这个月我被扣了两次钱", "I was charged twice this month"),
    ("退款两个星期了还没到账", "My refund has not arrived after two weeks"),
    ("发票上的金额不对", "The amount on the invoice is wrong"),
    ("付款失败了，但是钱已经扣了", "The payment failed but the money was taken"),
    ("我想取消自动续费", "I want to turn off automatic renewal"),
    ("为什么我的信用卡被拒绝了", "Why was my credit card declined"),
    ("优惠码没有生效", "The discount code did not work"),
    ("我想申请退款", "I would like to request a refund"),
    ("订阅价格突然涨了", "The subscription price suddenly went up"),
    ("应用一打开就闪退", "The app crashes as soon as I open it"),
    ("上传文件的时候一直报错", "I keep getting an error when uploading files"),
    ("网站加载非常慢", "The website loads very slowly"),
    ("我收不到任何通知", "I don't get any notifications"),
    ("更新以后照片都不见了", "All my photos disappeared after the update"),
    ("我的订单一直显示处理中", "My order has been stuck on processing"),
    ("包裹显示已送达但我没收到", "The parcel shows as delivered but I never got it"),
    ("我想更改收货地址", "I want to change the delivery address"),
    ("客服一直没有回复我", "Customer support never replied to me"),
    ("如何导出我的数据", "How do I export my data"),
    ("我想删除我的账户", "I want to delete my account"),
    ("视频通话没有声音", "There is no sound in video calls"),
    ("同步功能不工作了", "Syncing has stopped working"),
    ("打印出来的报表是空白的", "The printed report is blank"),
    ("我无法添加新的团队成员", "I cannot add new team members"),
    ("密码太短，系统不接受", "The system rejects my password as too short"),
    ("扫码支付没有反应", "Nothing happens when I scan the QR code to pay"),
    ("我的积分突然清零了", "My reward points were suddenly reset to zero"),
]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _rank1(queries: np.ndarray, targets: np.ndarray) -> float:
    return float((np.argmax(_unit(queries) @ _unit(targets).T, axis=1) == np.arange(len(queries))).mean())


def _half(text: str, chinese: bool) -> str:
    if chinese:
        return text[: max(2, len(text) // 2)]
    words = text.split()
    return " ".join(words[: max(2, len(words) // 2)])


def measure(stage) -> dict:
    zh, en = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    vz, ve = stage.embed(zh), stage.embed(en)
    out = {
        "half_zh": _rank1(stage.embed([_half(t, True) for t in zh]), vz),
        "half_en": _rank1(stage.embed([_half(t, False) for t in en]), ve),
        "zh_to_en": _rank1(vz, ve),
        "en_to_zh": _rank1(ve, vz),
    }
    texts = (zh + en) * 8
    stage.embed(texts[:32])
    started = time.perf_counter()
    stage.embed(texts)
    out["texts_per_s"] = len(texts) / (time.perf_counter() - started)
    one = []
    for t in zh[:10] + en[:10]:
        started = time.perf_counter()
        stage.embed([t])
        one.append(time.perf_counter() - started)
    out["one_text_ms"] = 1000 * float(np.median(one))
    return out


def main() -> dict:
    import stages  # noqa: F401
    from pipeline.config import Config
    from pipeline.stage import build_stage

    config = Config.load(None)
    results = {}
    for name in ("bert", "multilingual"):
        stage = build_stage(name, config)
        started = time.perf_counter()
        stage.ensure_ready()
        loaded = time.perf_counter() - started
        results[name] = {"load_s": loaded, **measure(stage)}
    print(f"multilingual text ({len(PAIRS)} zh/en support sentence pairs written for this bench):")
    print(f"  {'model':14} {'half zh':>8} {'half en':>8} {'zh->en':>7} {'en->zh':>7} {'texts/s':>8} {'1 text ms':>9} {'load s':>7}")
    for name, r in results.items():
        print(f"  {name:14} {r['half_zh']:8.2f} {r['half_en']:8.2f} {r['zh_to_en']:7.2f} {r['en_to_zh']:7.2f} "
              f"{r['texts_per_s']:8.0f} {r['one_text_ms']:9.1f} {r['load_s']:7.2f}")
    return results


if __name__ == "__main__":
    main()

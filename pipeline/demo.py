"""The bundled demo: a deterministic generator of ~600 messy support tickets (text + screenshot + voice).

Four classes, designed so that each modality alone confuses some of them and only fusion separates all:

| class          | text topic          | screenshot theme | voice pitch |
|----------------|---------------------|------------------|-------------|
| billing_light  | payment             | light            | low         |
| billing_dark   | payment             | dark             | high        |
| access_light   | account access      | light            | high        |
| access_dark    | account access      | dark             | low         |

Text tells payment from access, the screenshot tells light from dark, and the voice pitch is the parity
of the two (low when both cues agree in position, high otherwise), so any single modality reaches at
most ~50% and the three together close to 100%; each cue is flipped for ``NOISE`` of the items, which
fusion can outvote. The typed messages are phrased in English and in Chinese (``TEXT``); train items
type only ``TEXT_TRAIN`` phrasings and val / test items only ``TEXT_HELD_OUT`` ones, so a held-out
message is worded unlike any the model trained on. A few percent of items lack a modality; three are deliberately broken.

After those come tickets whose topic is not typed: ``n_spoken`` voice-only tickets (a topic-free or absent
message, a plain screenshot, and a recorded voice note, one of ``SPOKEN``, at the class's pitch) and
``n_shown`` screenshot-only tickets (a topic-free or absent message, an app dialog showing one of
``SHOWN`` in the class's theme, and a tone). The voice notes are espeak-ng recordings shipped in
``pipeline/demo_voice/`` (made once by ``bench/record_voice_clips.py``), so generation stays offline and
deterministic. The manifest's ``kind`` (typed / spoken / shown), ``words_topic`` and ``words_index`` name
what each such ticket says or shows, so a benchmark can pair it with its held-out paraphrase.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

VERSION = "3"
NOISE = 0.08
CLASSES = {  # name: (text topic, screenshot theme, voice pitch)
    "billing_light": ("payment", "light", "low"),
    "billing_dark": ("payment", "dark", "high"),
    "access_light": ("access", "light", "high"),
    "access_dark": ("access", "dark", "low"),
}
# The typed messages: per topic, phrasings in English and in Chinese (some mixed with English words).
# TEXT_TRAIN phrasings are typed only by train items, TEXT_HELD_OUT ones only by val and test items, so
# the held-out messages are worded apart from everything the model trained on: a text model must know
# the words, not the sentences. TEXT is both, every phrasing of a topic.
TEXT_TRAIN = {
    "payment": [
        "I was charged twice for my subscription this month",
        "My refund still hasn't arrived after two weeks",
        "The invoice shows the wrong amount &amp; the wrong VAT number",
        "Payment failed but money left my account",
        "Why did my card get billed for the premium plan?",
        "My subscription renewed yesterday even though I had switched auto-renew off",
        "The refund went back to a card I no longer have",
        "Where can I download the invoices for the last six months?",
        "我的账单金额不对，请帮我核实一下",
        "付款失败了，但是钱已经扣了",
        "退款什么时候到账？已经等了两个星期",
        "这个月的会员费被扣了两次",
        "信用卡被拒了，可是额度还够",
        "自动续费之前没有任何提醒",
        "麻烦帮我开一张增值税发票，抬头是公司",
        "用 PayPal 付款以后订单还是显示未支付",
    ],
    "access": [
        "I can't log in after resetting my password",
        "The app says my account is locked &quot;for security&quot;",
        "Two-factor code never arrives so I cannot sign in",
        "Login page keeps spinning and never loads",
        "I forgot my username and the recovery email bounces",
        "Signing in through our company SSO shows error 403",
        "The password reset email never shows up in my inbox",
        "I set up 2FA on a new phone and now none of the codes work",
        "无法登录我的账户，一直提示密码错误",
        "收不到验证码，没法登录",
        "账户被锁定了，怎么解锁？",
        "重置密码以后还是登不上去",
        "忘记了用户名，找回账号的邮件也收不到",
        "用公司的 SSO 登录时页面报错",
        "两步验证的动态码总是提示无效",
        "我的 iPhone 无法登录 App",
    ],
}
TEXT_HELD_OUT = {
    "payment": [
        "The same purchase appears two times on my bank statement, please reverse one",
        "I cancelled the order ten days ago and still have not got my money back",
        "Our monthly bill is higher than the price on your website",
        "The credit card payment was rejected when I tried to renew",
        "同一笔订单重复收费，请退回多扣的钱",
        "取消订阅已经一周了，退款还没收到",
        "发票上的税号和金额都写错了",
        "续费的时候银行卡支付一直失败",
    ],
    "access": [
        "Every time I enter my credentials the site says they are invalid",
        "My profile was blocked after a suspicious sign-in, how do I unblock it?",
        "The one-time passcode by text message never reaches me",
        "I changed my password on the website and the mobile app will not let me in anymore",
        "输入了正确的账号和口令还是进不去",
        "手机短信验证码一直没有发过来",
        "账号因为多次输错密码被冻结了，请帮忙恢复",
        "登录页面一直转圈，什么都打不开",
    ],
}
TEXT = {topic: TEXT_TRAIN[topic] + TEXT_HELD_OUT[topic] for topic in TEXT_TRAIN}
# Tickets whose topic is only said (a recorded voice note) or only shown (an error dialog on the screenshot).
# Each entry is (what is said / shown, a held-out paraphrase: other words, same meaning) for the search
# benchmark. Worded apart from TEXT (the typed messages) and from each other, one problem per entry.
SPOKEN = {
    "payment": [
        ("my card was declined even though there is money in my account", "card refused despite enough funds"),
        ("i want to cancel before my free trial turns into a paid plan", "stop the membership prior to the trial converting"),
        ("the discount code from your newsletter did not lower the price", "promo voucher was not applied to the total"),
        ("please bill me in euros instead of dollars", "charge me in the European currency rather than the American one"),
        ("i paid with the wrong card, can you move the charge to my other one", "switch the debit over to a different card of mine"),
        ("you added a late fee although i paid on time", "charged a lateness penalty though I paid by the due date"),
        ("my bank transfer has been pending for five days", "wire stuck in processing for almost a week"),
        ("i need a receipt with our company details for the tax office", "proof of purchase for business accounting"),
        ("my renewal price went up without any warning", "the renewal cost rose with no notice"),
        ("i was billed for three seats but our team only has two people", "charged for one more seat than we have users"),
        ("apple pay fails at the very last step", "mobile wallet checkout errors at the end"),
        ("can i pay once a year instead of every month", "annual billing rather than monthly"),
        ("the balance on my gift card has disappeared", "the credit on my gift voucher is gone"),
        ("there is a charge on my statement that i do not recognise", "an unfamiliar charge from you appears on my bank statement"),
        ("paypal says the seller rejected my payment", "online wallet reports the merchant refused it"),
        ("my student discount stopped after the renewal", "education price reduction ended when the plan renewed"),
        ("the sales tax on my order looks far too high", "the tax added to my order seems excessive"),
        ("my plan was downgraded because the automatic payment bounced", "subscription moved to a lower tier after the direct debit failed"),
        ("you sent me a bill for a month after i had already closed my account", "charged for another month even though my account was already closed"),
        ("the checkout added a shipping cost for a digital download", "delivery fee on a product with nothing to ship"),
    ],
    "access": [
        ("the app keeps saying my password is wrong", "the app keeps telling me my passcode is incorrect"),
        ("the reset link in the email has already expired when i click it", "the password reset email link is already invalid when I open it"),
        ("i lost my phone and with it the authenticator app", "my phone is lost so I have no authenticator codes"),
        ("i changed my email address and now the site does not know me", "after switching mail address my profile is not recognised"),
        ("face unlock no longer opens the app on my tablet", "biometric scan fails to start the application"),
        ("someone signed into my account from another country", "unknown foreign login on my profile"),
        ("i keep getting logged out every few minutes", "the session ends again and again after a short while"),
        ("the sign in with google button does nothing", "clicking the Google login button has no effect"),
        ("my work account was disabled after i moved to another team", "employee profile deactivated following a department change"),
        ("the captcha will not accept my answer", "the robot check keeps rejecting me"),
        ("how do i give my colleague access to our shared account", "add another user to the joint profile"),
        ("my old security questions do not work anymore", "my security question answers from years ago are rejected"),
        ("i cannot switch between my personal and business profiles", "toggling from private to company account fails"),
        ("it says too many attempts and tells me to wait an hour", "blocked for repeated tries and asked to come back later"),
        ("the verification text goes to my old phone number", "the SMS code is sent to a previous mobile"),
        ("the desktop program says my licence key is invalid", "the software rejects my activation code"),
        ("the parental pin on my child's profile is not accepted", "family control code refused for the kid's account"),
        ("the company single sign on sends me back to the start page", "corporate SSO loops to the beginning"),
        ("i want to delete my account but i cannot sign in to do it", "wish to close the profile yet unable to log on"),
        ("the magic login link opens a blank page", "the passwordless email link shows an empty screen"),
    ],
}
SHOWN = {
    "payment": [
        ("This card has expired. Please update your payment details.", "card validity ended, enter new billing info"),
        ("Daily transaction limit exceeded.", "spending cap for today reached"),
        ("Billing address does not match the card.", "postcode differs from the issuer's record"),
        ("Bank verification (3-D Secure) failed.", "the bank's extra security step did not pass"),
        ("Payment overdue: your subscription will be suspended.", "unpaid bill, plan about to be paused"),
        ("This plan is not available in your country.", "product not sold in your region"),
        ("Security code (CVV) is incorrect.", "wrong CVV number entered"),
        ("Payment service unavailable. Try again in a few minutes.", "the payment system is temporarily down"),
        ("Card type not accepted. Please use Visa or Mastercard.", "this brand of card is unsupported"),
        ("Minimum order amount is 5.00 EUR.", "purchase below the smallest allowed total"),
        ("IBAN is invalid. Check your bank account number.", "wrong international account code"),
        ("This card has been reported lost or stolen.", "card blocked after a theft report"),
        ("The price changed during checkout. Review your cart.", "cost updated while buying, check the basket"),
        ("Pay-later financing was not approved.", "instalment credit request refused"),
        ("Cryptocurrency payments are not accepted.", "bitcoin not supported as a way to pay"),
        ("Loyalty points cannot be used for this purchase.", "cannot redeem reward points on this order"),
        ("Splitting a payment between two cards is not supported.", "cannot divide the amount across cards"),
        ("Cash on delivery is not available for this address.", "paying cash when the parcel arrives is not offered at this address"),
        ("Chargeback opened: this payment is under dispute.", "the bank is contesting this transaction"),
        ("Upgrading now is charged pro rata for this month.", "an upgrade today is billed proportionally for the rest of the month"),
    ],
    "access": [
        ("Your password has expired. Choose a new one to continue.", "your password is too old, pick a new one"),
        ("Account not found. Check the email address you entered.", "no profile exists for that mail address"),
        ("This device is not trusted. Approve it from another device.", "unrecognised computer needs confirmation elsewhere"),
        ("Your session has expired. Please sign in again.", "timed out, log on once more"),
        ("Access denied: you do not have permission to view this page.", "insufficient rights for this resource"),
        ("Email address not verified. Open the confirmation link we sent.", "mailbox unconfirmed, use the activation message"),
        ("VPN or proxy detected. Disable it to sign in.", "anonymizing network blocked at login"),
        ("Username contains invalid characters.", "login name has forbidden symbols"),
        ("Cookies are disabled. Enable them to stay signed in.", "browser storage is off so no session is kept"),
        ("Your organisation requires a security key.", "the company requires a hardware security key"),
        ("Password too weak: use at least 12 characters.", "passphrase does not meet the length rule"),
        ("Invitation link is invalid or was already used.", "team join link no longer works"),
        ("Account suspended for violating the terms of service.", "profile banned for breaking the rules"),
        ("Passkey not recognised on this browser.", "this browser does not recognise the passkey"),
        ("The pairing QR code has expired. Generate a new one.", "the QR code for linking a device timed out"),
        ("Device clock is out of sync: one-time codes rejected.", "wrong system time breaks verification codes"),
        ("You are already signed in on five devices.", "logged in on the maximum number of devices already"),
        ("All of your recovery codes have been used.", "no backup codes left"),
        ("Your account is waiting for administrator approval.", "pending admin activation of the profile"),
        ("This browser is not supported. Update it to sign in.", "outdated web client cannot log on"),
    ],
}
SHOWN_TITLES = {  # the dialog's title, fitting any message of its topic
    "payment": ["Payment error", "Payment declined", "Billing", "Checkout", "Transaction failed"],
    "access": ["Sign-in error", "Login failed", "Account", "Access denied", "Security check"],
}
APPS = ["Acme Pay", "Helpdesk", "MyAccount", "ShopNow", "CloudDrive", "Bankly"]
BUTTONS = [["OK"], ["Retry"], ["Cancel", "Retry"], ["Close"], ["OK", "Help"]]
# The typed message of a voice-only / screenshot-only ticket: absent, or a line that names no topic.
VOICE_ONLY_TEXT = ["", "", "see the voice note", "voice message attached", "请听语音", "Please listen to my recording",
                   "sent you a voice memo", "语音留言，谢谢"]
SCREEN_ONLY_TEXT = ["", "", "see screenshot", "screenshot attached", "What does this mean?", "请看截图",
                    "this keeps popping up", "see the attached picture"]
# The recorded clips: SPOKEN[topic][i] as pipeline/demo_voice/{topic}_{i:02d}_{pitch}.ogg, spoken by
# VOICES[i % len(VOICES)] at espeak-ng's pitch PITCHES[pitch] (bench/record_voice_clips.py).
VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-us+f3")
PITCHES = {"low": 25, "high": 75}
CLIPS = "demo_voice"
DECOR = ["", " 😡", " 🙏", " 👍🏽", " 😊", " 👨‍👩‍👧"]
MESS = [
    lambda t: t,
    lambda t: f"<p>{t}</p>",
    lambda t: f"  {t}\t\t please help!!  ",
    lambda t: t.replace(" ", "\u00a0", 2) + "\u200b",
    lambda t: f"<b>URGENT</b>&nbsp;{t}<br/>Thanks",
    lambda t: f"{t}\r\n\r\n-- sent from my phone",
    lambda t: "Ｈｅｌｌｏ，" + t,
    lambda t: t + "\u3000\u3000谢谢",
]
RATES = [8000, 16000, 44100, 48000]
AUDIO_FORMATS = [("wav", "WAV", "PCM_16"), ("wav", "WAV", "FLOAT"), ("flac", "FLAC", "PCM_16"), ("flac", "FLAC", "PCM_24"), ("ogg", "OGG", "VORBIS")]
IMAGE_MODES = ["RGB", "RGB", "L", "RGBA", "P", "exif"]


def _flip(rng: np.random.Generator, value: str, options: tuple[str, str]) -> str:
    return (options[1] if value == options[0] else options[0]) if rng.random() < NOISE else value


def _image(rng: np.random.Generator, theme: str, path_stem: Path) -> str:
    from PIL import Image, ImageDraw

    w, h = int(rng.integers(96, 640)), int(rng.integers(96, 640))
    base = rng.integers(200, 250) if theme == "light" else rng.integers(15, 60)
    tint = rng.integers(-15, 16, size=3)
    bg = tuple(int(np.clip(base + t, 0, 255)) for t in tint)
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    ink = 40 if theme == "light" else 210
    for _ in range(int(rng.integers(3, 9))):  # UI blocks and text lines
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 6))
        x1, y1 = x0 + int(rng.integers(10, max(11, w // 2))), y0 + int(rng.integers(3, 12))
        shade = tuple(int(np.clip(ink + v, 0, 255)) for v in rng.integers(-30, 31, size=3))
        draw.rectangle([x0, y0, x1, y1], fill=shade)
    accent = tuple(int(v) for v in rng.integers(0, 256, size=3))
    draw.ellipse([w // 3, h // 3, w // 3 + w // 6, h // 3 + h // 6], fill=accent)
    mode = IMAGE_MODES[int(rng.integers(len(IMAGE_MODES)))]
    if mode == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # stored rotated; viewers rotate 90° clockwise to display
        path = path_stem.with_suffix(".jpg")
        img.transpose(Image.Transpose.ROTATE_90).save(path, quality=85, exif=exif)
    elif mode == "RGBA":
        alpha = Image.new("L", (w, h), 255)
        ImageDraw.Draw(alpha).rectangle([0, 0, w // 5, h], fill=0)
        img.putalpha(alpha)
        path = path_stem.with_suffix(".png")
        img.save(path)
    elif mode == "P":
        path = path_stem.with_suffix(".png")
        img.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(path)
    elif mode == "L":
        path = path_stem.with_suffix(".png" if rng.random() < 0.5 else ".jpg")
        img.convert("L").save(path)
    else:
        path = path_stem.with_suffix(".jpg" if rng.random() < 0.5 else ".png")
        img.save(path, **({"quality": int(rng.integers(60, 95))} if path.suffix == ".jpg" else {}))
    return path.name


def _audio(rng: np.random.Generator, pitch: str, path_stem: Path) -> str:
    import soundfile as sf

    sr = RATES[int(rng.integers(len(RATES)))]
    seconds = float(rng.uniform(0.5, 6.0))
    n = int(sr * seconds)
    t = np.arange(n) / sr
    f0 = rng.uniform(110, 220) if pitch == "low" else rng.uniform(700, 1400)
    f0 = min(f0, sr / 2 / 4)
    wobble = 1 + 0.03 * np.sin(2 * np.pi * rng.uniform(2, 6) * t)
    phase = 2 * np.pi * np.cumsum(f0 * wobble) / sr
    voice = sum((0.6 / k) * np.sin(k * phase) for k in (1, 2, 3))
    envelope = np.clip(np.sin(np.pi * t / seconds) * 1.5, 0, 1)
    signal = voice * envelope * rng.uniform(0.1, 0.8) + rng.normal(0, 0.01, n)
    lead = np.zeros(int(sr * rng.uniform(0, 0.3)))
    signal = np.concatenate([lead, signal, lead]).astype(np.float32)
    if rng.random() < 0.4:
        signal = np.stack([signal, signal * rng.uniform(0.5, 1.0)], axis=1)
    ext, fmt, subtype = AUDIO_FORMATS[int(rng.integers(len(AUDIO_FORMATS)))]
    path = path_stem.with_suffix("." + ext)
    sf.write(path, np.clip(signal, -1, 1), sr, format=fmt, subtype=subtype)
    # libsndfile stamps the clock into two formats; make their bytes reproducible: the Ogg stream serial,
    # and the time in a float WAV's PEAK chunk
    if fmt == "OGG":
        path.write_bytes(_ogg_serial(path.read_bytes(), zlib.crc32(path.name.encode())))
    elif subtype == "FLOAT":
        data = bytearray(path.read_bytes())
        peak = data.find(b"PEAK", 12, 512)
        if peak > 0:
            data[peak + 12:peak + 16] = bytes(4)  # "PEAK", size, version, then the timestamp
            path.write_bytes(bytes(data))
    return path.name


def _ogg_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
        table.append(crc)
    return table


_OGG_CRC = _ogg_table()


def _ogg_crc(page: bytes) -> int:
    """The Ogg page checksum: CRC-32, polynomial 0x04C11DB7, not reflected, initial value 0."""
    crc, table = 0, _OGG_CRC
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def _ogg_serial(data: bytes, serial: int) -> bytes:
    """``data`` (a single-stream Ogg file) with every page's stream serial set to ``serial``, checksums redone."""
    out, at = bytearray(), 0
    while at + 27 <= len(data) and data[at:at + 4] == b"OggS":
        n_segments = data[at + 26]
        size = 27 + n_segments + sum(data[at + 27:at + 27 + n_segments])
        page = bytearray(data[at:at + size])
        page[14:18] = serial.to_bytes(4, "little")
        page[22:26] = bytes(4)
        page[22:26] = _ogg_crc(page).to_bytes(4, "little")
        out += page
        at += size
    return bytes(out) + data[at:]


def _wrap(draw, text: str, font, width: float) -> list[str]:
    """Greedy word wrap of ``text`` into lines at most ``width`` pixels wide (a longer word stays whole)."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def _shade(base: int, spread: int, rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(np.clip(base + v, 0, 255)) for v in rng.integers(-spread, spread + 1, size=3))


def _dialog(rng: np.random.Generator, theme: str, title: str, message: str, path_stem: Path) -> str:
    """An app's error dialog: a window title bar, an icon, the error ``title``, the ``message`` (wrapped) and
    one or two buttons, light or dark, 320-1024 px wide; PNG or JPEG (quality 60-95). Text is 14 px or more."""
    from PIL import Image, ImageDraw, ImageFont

    w = int(rng.integers(320, 1025))
    size = int(np.clip(w / rng.uniform(26, 40), 14, 30))  # message text, px
    fonts = {k: ImageFont.load_default(size=max(14, round(size * f))) for k, f in (("bar", 0.9), ("title", 1.35), ("text", 1.0))}
    light = theme == "light"
    window = _shade(int(rng.integers(225, 245)) if light else int(rng.integers(18, 40)), 8, rng)
    bar = _shade(int(rng.integers(200, 220)) if light else int(rng.integers(40, 60)), 8, rng)
    card = _shade(int(rng.integers(246, 256)) if light else int(rng.integers(45, 70)), 4, rng)
    ink = _shade(int(rng.integers(20, 60)) if light else int(rng.integers(210, 240)), 10, rng)
    accent = [(37, 99, 235), (220, 38, 38), (22, 163, 74), (124, 58, 237), (234, 88, 12)][int(rng.integers(5))]
    app, buttons = APPS[int(rng.integers(len(APPS)))], BUTTONS[int(rng.integers(len(BUTTONS)))]

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    bar_h = round(fonts["bar"].size * 1.9)
    margin = max(16, w // 14)  # window edge to the dialog card
    pad = max(12, size)  # inside the card
    icon = round(fonts["title"].size * 1.2)
    text_x = margin + pad + icon + pad // 2
    lines = _wrap(probe, message, fonts["text"], w - text_x - margin - pad)
    line_h = round(size * 1.45)
    button_h = round(size * 2.0)
    card_top = bar_h + margin
    body_top = card_top + pad + round(fonts["title"].size * 1.6)
    card_bottom = body_top + len(lines) * line_h + pad + button_h + pad
    h = max(card_bottom + margin, int(w * rng.uniform(0.45, 0.75)))

    img = Image.new("RGB", (w, h), window)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, w, bar_h], fill=bar)
    dot = max(6, bar_h // 4)
    for k, colour in enumerate([(237, 106, 94), (245, 191, 79), (98, 197, 84)]):
        x = w - (k + 1) * (dot * 2 + 4) - 4
        draw.ellipse([x, bar_h // 2 - dot // 2, x + dot, bar_h // 2 + dot // 2], fill=colour)
    draw.text((pad, bar_h // 2), app, font=fonts["bar"], fill=ink, anchor="lm")
    draw.rounded_rectangle([margin, card_top, w - margin, card_bottom], radius=max(4, size // 2), fill=card,
                           outline=_shade(128, 20, rng))
    ix, iy = margin + pad, card_top + pad
    draw.ellipse([ix, iy, ix + icon, iy + icon], fill=accent)
    draw.text((ix + icon // 2, iy + icon // 2), "!", font=fonts["title"], fill=(255, 255, 255), anchor="mm")
    draw.text((text_x, card_top + pad), title, font=fonts["title"], fill=ink)
    for k, line in enumerate(lines):
        draw.text((text_x, body_top + k * line_h), line, font=fonts["text"], fill=ink)
    right = w - margin - pad
    for label in reversed(buttons):
        bw = round(probe.textlength(label, font=fonts["text"])) + 2 * pad
        box = [right - bw, card_bottom - pad - button_h, right, card_bottom - pad]
        primary = label == buttons[-1]
        draw.rounded_rectangle(box, radius=max(3, size // 3), fill=accent if primary else card,
                               outline=accent)
        draw.text(((box[0] + box[2]) // 2, (box[1] + box[3]) // 2), label, font=fonts["text"],
                  fill=(255, 255, 255) if primary else ink, anchor="mm")
        right = box[0] - pad // 2
    if rng.random() < 0.5:
        path = path_stem.with_suffix(".jpg")
        img.save(path, quality=int(rng.integers(60, 96)))
    else:
        path = path_stem.with_suffix(".png")
        img.save(path)
    return path.name


def voice_clip(topic: str, index: int, pitch: str):
    """The recorded clip saying ``SPOKEN[topic][index][0]`` at ``pitch``, from the installed package."""
    clip = resources.files("pipeline") / CLIPS / f"{topic}_{index:02d}_{pitch}.ogg"
    if not clip.is_file():
        raise FileNotFoundError(f"demo voice clip {clip} is missing: the package's {CLIPS}/ folder is incomplete "
                                "(reinstall mmpipe, or run bench/record_voice_clips.py in a checkout)")
    return clip


def _splits(rng: np.random.Generator, labels: list[str]) -> list[str]:
    """Train/val/test for one kind of ticket, stratified by label (~70/15/15), every split non-empty once
    there are three tickets or more."""
    out = [""] * len(labels)
    for label in dict.fromkeys(labels):
        where = [i for i, x in enumerate(labels) if x == label]
        k = round(len(where) * 0.15)
        plan = ["val"] * k + ["test"] * k + ["train"] * (len(where) - 2 * k)
        for i, split in zip(where, rng.permutation(plan)):
            out[i] = str(split)
    for split in ("train", "val", "test"):
        if len(out) >= 3 and split not in out:
            spare = [i for i in range(len(out)) if out.count(out[i]) > 1]
            out[spare[int(rng.integers(len(spare)))]] = split
    return out


def _words_tickets(rng: np.random.Generator, out: Path, first: int, n_spoken: int, n_shown: int) -> list[dict]:
    """Voice-only then screenshot-only tickets, numbered from ``first``: the topic is only said / only
    shown (one of SPOKEN / SHOWN, the class's topic), the other cues as the typed tickets have them."""
    data, names, rows = out / "demo_data", list(CLASSES), []
    for kind, count, bank, filler in (("spoken", n_spoken, SPOKEN, VOICE_ONLY_TEXT), ("shown", n_shown, SHOWN, SCREEN_ONLY_TEXT)):
        labels = [names[j % len(names)] for j in range(count)]
        splits = _splits(rng, labels)
        order = {topic: [] for topic in bank}  # each topic's entries in a shuffled cycle: all used before any twice
        for j, label in enumerate(labels):
            i = first + len(rows)
            item_id = f"t{i:04d}"
            topic, theme, pitch = CLASSES[label]
            if not order[topic]:
                order[topic] = [int(x) for x in rng.permutation(len(bank[topic]))]
            index = order[topic].pop(0)
            text = filler[int(rng.integers(len(filler)))]
            if text:
                text = MESS[int(rng.integers(len(MESS)))](text)
            row = {"id": item_id, "split": splits[j], "label": label, "text": text, "text_path": "", "image": "", "audio": "",
                   "channel": ["email", "chat", "phone"][i % 3], "kind": kind, "words_topic": topic, "words_index": str(index)}
            if kind == "spoken":
                if rng.random() > 0.04:
                    row["image"] = "demo_data/images/" + _image(rng, _flip(rng, theme, ("light", "dark")), data / "images" / item_id)
                (data / "audio" / f"{item_id}.ogg").write_bytes(voice_clip(topic, index, pitch).read_bytes())
                row["audio"] = f"demo_data/audio/{item_id}.ogg"
            else:
                title = SHOWN_TITLES[topic][int(rng.integers(len(SHOWN_TITLES[topic])))]
                row["image"] = "demo_data/images/" + _dialog(rng, theme, title, SHOWN[topic][index][0], data / "images" / item_id)
                if rng.random() > 0.04:
                    row["audio"] = "demo_data/audio/" + _audio(rng, _flip(rng, pitch, ("low", "high")), data / "audio" / item_id)
            rows.append(row)
    return rows


def generate(out: Path, n_items: int = 600, seed: int = 7, force: bool = False, n_spoken: int = 48, n_shown: int = 48) -> Path:
    """Write ``out/demo.csv`` and its raw files under ``out/demo_data``. Skips if already complete.

    ``n_items`` typed tickets (drawn from ``seed``, unchanged by the rest), then ``n_spoken`` voice-only and
    ``n_shown`` screenshot-only tickets (drawn from ``seed + 1``)."""
    data = out / "demo_data"
    marker = data / ".complete"
    manifest = out / "demo.csv"
    stamp = json.dumps({"version": VERSION, "items": n_items, "seed": seed, "spoken": n_spoken, "shown": n_shown})
    if not force and marker.is_file() and marker.read_text() == stamp and manifest.is_file():
        return manifest
    rng = np.random.default_rng(seed)
    for sub in ("images", "audio", "text"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    names = list(CLASSES)
    rows = []
    for i in range(n_items):
        item_id = f"t{i:04d}"
        label = names[i % len(names)]
        topic, theme, pitch = CLASSES[label]
        split = ["train"] * 14 + ["val"] * 3 + ["test"] * 3
        row = {"id": item_id, "split": split[int(rng.integers(len(split)))], "label": label, "text": "", "text_path": "", "image": "", "audio": "", "channel": ["email", "chat", "phone"][i % 3],
               "kind": "typed", "words_topic": "", "words_index": ""}
        if rng.random() > 0.04:
            topic = _flip(rng, topic, ("payment", "access"))
            phrasings = (TEXT_TRAIN if row["split"] == "train" else TEXT_HELD_OUT)[topic]
            sentence = phrasings[int(rng.integers(len(phrasings)))]
            text = MESS[int(rng.integers(len(MESS)))](sentence) + DECOR[int(rng.integers(len(DECOR)))]
            if rng.random() < 0.1:
                rel = f"demo_data/text/{item_id}.txt"
                (out / rel).write_text(text, encoding="utf-8")
                row["text_path"] = rel
            else:
                row["text"] = text
        if rng.random() > 0.04:
            row["image"] = "demo_data/images/" + _image(rng, _flip(rng, theme, ("light", "dark")), data / "images" / item_id)
        if rng.random() > 0.04:
            row["audio"] = "demo_data/audio/" + _audio(rng, _flip(rng, pitch, ("low", "high")), data / "audio" / item_id)
        rows.append(row)
    # Deliberately broken items: the run must report them and go on.
    (data / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 300, dtype=np.uint8)))
    rows[5]["image"] = "demo_data/images/broken.png"
    (data / "audio" / "empty.wav").write_bytes(b"")
    rows[6]["audio"] = "demo_data/audio/empty.wav"
    (data / "text" / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me: r\xe9clamation de facture".encode("latin-1"))
    rows[7]["text"], rows[7]["text_path"] = "", "demo_data/text/latin1.txt"
    rows += _words_tickets(np.random.default_rng(seed + 1), out, n_items, n_spoken, n_shown)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest.write_text(buf.getvalue(), encoding="utf-8")
    marker.write_text(stamp)
    return manifest

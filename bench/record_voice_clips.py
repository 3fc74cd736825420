"""Record the demo's voice notes once: every sentence of ``pipeline.demo.SPOKEN`` at both pitches.

    python bench/record_voice_clips.py [--out pipeline/demo_voice] [--bitrate 14]

Not run by ``make``: the clips are committed under ``pipeline/demo_voice/`` so that ``make features``
stays offline and deterministic (the generator only copies them). Run this after editing ``SPOKEN``,
``VOICES`` or ``PITCHES`` in ``pipeline/demo.py`` and commit the clips it writes.

Needs espeak-ng, sox and opusenc (Debian: ``apt-get install espeak-ng sox opus-tools``). Each clip:
espeak-ng speaks ``SPOKEN[topic][i][0]`` with voice ``VOICES[i % len(VOICES)]`` at ``-p PITCHES[pitch]``
and ``-s 175`` words per minute (the default); sox resamples it to 16 kHz mono 16-bit, normalizes the peak to -1 dBFS
and pads 0.3 s of silence at each end; opusenc encodes it as Ogg/Opus (VBR, ``--bitrate`` kbps, a fixed
stream serial so the same inputs give the same bytes), with the sentence, voice and pitch in its tags.
Files are named ``{topic}_{i:02d}_{pitch}.ogg`` (e.g. ``payment_03_low.ogg``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.demo import PITCHES, SPOKEN, VOICES  # noqa: E402

SPEED = 175  # words per minute (espeak-ng's default)
PAD = 0.3  # seconds of silence before and after


def record(text: str, voice: str, pitch: int, out: Path, bitrate: int, tmp: Path) -> None:
    raw, wav = tmp / "raw.wav", tmp / "clip.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(SPEED), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav), "gain", "-n", "-1",
                    "pad", str(PAD), str(PAD)], check=True)
    serial = zlib.crc32(out.name.encode())  # fixed per file: opusenc picks a random one otherwise
    subprocess.run(["opusenc", "--quiet", "--bitrate", str(bitrate), "--vbr", "--comp", "10", "--serial", str(serial),
                    "--title", text, "--artist", f"espeak-ng -v {voice} -p {pitch} -s {SPEED}",
                    str(wav), str(out)], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "pipeline" / "demo_voice")
    parser.add_argument("--bitrate", type=int, default=14, help="Opus bitrate in kbit/s (default 14)")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("espeak-ng", "sox", "opusenc") if shutil.which(tool) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)} (apt-get install espeak-ng sox opus-tools)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    import soundfile as sf

    total, durations = 0, []
    with tempfile.TemporaryDirectory() as tmp:
        for topic, pairs in SPOKEN.items():
            for i, (sentence, _paraphrase) in enumerate(pairs):
                voice = VOICES[i % len(VOICES)]
                for name, pitch in PITCHES.items():
                    path = args.out / f"{topic}_{i:02d}_{name}.ogg"
                    record(sentence, voice, pitch, path, args.bitrate, Path(tmp))
                    total += path.stat().st_size
                    durations.append(sf.info(str(path)).duration)
    print(f"{len(durations)} clips in {args.out}: {total / 1024:.0f} KiB; "
          f"{min(durations):.2f} / {sum(durations) / len(durations):.2f} / {max(durations):.2f} s (min / mean / max)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

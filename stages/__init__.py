"""One module per stage. Importing this package registers every stage and its config section (cheaply:
no heavy imports). ``pipeline`` never imports this package; the CLI does."""

from pipeline.stage import STAGES

from . import clean_text, clean_image, clean_audio, transcribe, ocr, mfcc, bert, multilingual, cnn, fuse, train  # noqa: E402,F401  (registration)

# The stages `make features` finishes with; everything upstream of them runs too.
FEATURES = ["bert", "cnn", "mfcc", "bert_speech", "bert_screen", "multilingual", "multilingual_speech",
            "multilingual_screen"]

__all__ = ["STAGES", "FEATURES"]

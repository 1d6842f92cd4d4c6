"""The language filter (lingua) on real sentences in ten languages."""

from __future__ import annotations

import pickle

import pytest

from lmforge import ConfigValueError
from lmforge_data.filter_config import LanguageFilterConfig
from lmforge_data.filters import language
from tests.filters_v2.multilingual import TEXTS

#: The test languages and their close neighbours (Catalan, Danish, Swedish, Norwegian,
#: Ukrainian, Belarusian, Estonian ...): loading all 75 models takes ~1 GB and most of a minute
#: on a busy 2-core machine, so only the slow test below does.
NEAR = [*TEXTS, "ca", "da", "sv", "nb", "nn", "uk", "be", "et", "af", "ro", "sk", "cs"]


@pytest.fixture(scope="module")
def detect_all() -> language.LanguageFilter:
    return language.factory(LanguageFilterConfig(candidates=NEAR))


@pytest.mark.slow
def test_all_75_languages_detect_the_ten():
    f = language.factory(LanguageFilterConfig())
    assert {c: f(t).metadata["language"] for c, t in TEXTS.items()} == {c: c for c in TEXTS}


def test_every_language_is_detected_with_confidence(detect_all):
    for code, text in TEXTS.items():
        result = detect_all(text)
        assert result.keep, code
        assert result.metadata["language"] == code
        assert result.metadata["language_score"] >= 0.5, (code, result.metadata)


def test_kept_languages_thresholds_and_reasons(detect_all):
    keep_en_de = language.factory(LanguageFilterConfig(languages=["en", "de"], candidates=NEAR))
    assert keep_en_de(TEXTS["de"]).keep
    dropped = keep_en_de(TEXTS["fr"])
    assert (dropped.keep, dropped.reason, dropped.metadata["language"]) == (False, "language",
                                                                            "fr")
    # a per-language threshold above the detected confidence drops with 'low_score'
    mixed = "La biblioteca abre a las nueve. A biblioteca abre às nove horas."
    code, score = detect_all.detect(mixed)
    assert code in ("es", "pt") and 0.1 < score < 0.99
    assert detect_all(mixed).reason == "low_score"  # under min_score 0.5
    strict = language.factory(LanguageFilterConfig(candidates=NEAR,
                                                   thresholds={code: score + 0.01}))
    assert strict(mixed).reason == "low_score"
    assert strict(TEXTS["en"]).keep  # the others keep min_score
    assert language.factory(LanguageFilterConfig(candidates=NEAR, thresholds={
        code: score - 0.01}))(mixed).keep
    assert detect_all("1234 5678 !!! ???").reason == "no_language"


def test_restricted_candidates_and_low_accuracy_still_detect():
    f = language.factory(LanguageFilterConfig(candidates=["en", "de", "fr", "es"],
                                              low_accuracy=True))
    for code in ("en", "de", "fr", "es"):
        assert f(TEXTS[code]).metadata["language"] == code
    copy = pickle.loads(pickle.dumps(f))  # the detector is rebuilt in a worker
    assert copy(TEXTS["fr"]).metadata["language"] == "fr"


def test_long_documents_are_cut_at_max_chars():
    f = language.factory(LanguageFilterConfig(max_chars=200))
    for first, rest in (("de", "en"), ("en", "fr")):
        text = TEXTS[first] + " " + " ".join([TEXTS[rest], TEXTS["es"], TEXTS[rest]])
        assert f(text).metadata["language"] == first  # only the start is read


def test_bad_configs_name_the_key():
    with pytest.raises(ValueError, match="'xx' is not an ISO 639-1 code"):
        LanguageFilterConfig(languages=["en", "xx"])
    with pytest.raises(ValueError, match="not among the candidates"):
        LanguageFilterConfig(languages=["en", "fi"], candidates=["en", "de"])
    with pytest.raises(ValueError, match="threshold 1.5"):
        LanguageFilterConfig(thresholds={"en": 1.5})
    assert issubclass(ConfigValueError, ValueError)

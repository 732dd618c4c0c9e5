"""Specific Character Set lookups: declarations are cached as written, and the cache never changes an answer."""

from __future__ import annotations

import pytest

from medcloud.formats import charset as cs


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"ISO_IR 100",
        b"ISO_IR 192",
        b"\\ISO 2022 IR 87",
        b"ISO 2022 IR 6\\ISO 2022 IR 87",
        b"ISO_IR 13\\ISO 2022 IR 87",
        b"ISO\x00IR 100",  # not a Code String: the default repertoire
        b"\\".join([b"ISO_IR 100"] * 20),  # more terms than are read
        b"X" * 500,
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on terms that name no character set
def test_cached_lookup_answers_as_parsing_does(raw: bytes) -> None:
    cs._by_value.cache_clear()
    first, second, parsed = cs.charset_for(raw), cs.charset_for(raw), cs._parse(raw)
    assert first.terms == second.terms == parsed.terms
    assert first.simple == parsed.simple and first.encodings == parsed.encodings
    text = "山田^太郎=ヤマダ^タロウ" if parsed.encodings else "Yamada^Taro"
    assert first.decode(parsed.encode(text)) == parsed.decode(parsed.encode(text))
    assert cs._by_value.cache_info().currsize == (1 if len(raw) <= cs._VALUE_KEY_MAX else 0)


@pytest.mark.filterwarnings("ignore:Unknown encoding:UserWarning")  # "ISO_IR 7" and the like name nothing
def test_the_cache_stays_bounded_and_accepts_memory_views() -> None:
    cs._by_value.cache_clear()
    bound = cs._by_value.cache_info().maxsize
    assert bound
    for i in range(bound * 2 + 3):
        cs.charset_for(b"ISO_IR %d" % i)
    assert 0 < cs._by_value.cache_info().currsize <= bound
    assert cs.charset_for(memoryview(b"ISO_IR 192")).simple == "utf_8"

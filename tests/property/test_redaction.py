"""safe_text: no piece of a secret of 8 or more characters survives, wherever the secret sits
in the text and wherever the text was cut before or after."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from support.secrets import key_pieces

from harness.records.redact import MASK, backend_name, safe_text

SECRET = "sk-secret-XYZ1234567"
filler = st.text(alphabet='abc xyz:{}"-_0123456789', max_size=300)


@settings(max_examples=500)
@given(before=filler, after=filler, cut_start=st.integers(0, 400), cut_end=st.integers(0, 400),
       limit=st.none() | st.integers(0, 500))  # fmt: skip
def test_no_piece_of_the_secret_survives_a_cut_anywhere(
    before: str, after: str, cut_start: int, cut_end: int, limit: int | None
) -> None:
    whole = before + SECRET + after
    # What a reader kept of the server's text: any slice of it (a body read to a limit).
    kept = whole[cut_start : len(whole) - cut_end]
    assert not key_pieces(safe_text(kept, (SECRET,), limit), SECRET)


@given(text=filler, limit=st.integers(3, 400))
def test_text_without_secrets_is_only_clipped(text: str, limit: int) -> None:
    out = safe_text(text, ("sk-not-in-the-alphabet-QQQ",), limit)
    assert out == (text if len(text) <= limit else text[: limit - 3] + "...")


def test_every_occurrence_and_the_longest_secret_first() -> None:
    out = safe_text("a sk-secret-XYZ1234567 b sk-secret-XYZ1234567", (SECRET, "sk-secret"))
    assert out == f"a {MASK} b {MASK}"
    assert safe_text("nothing", (None, "")) == "nothing"


def test_a_piece_cut_from_inside_the_secret_is_masked() -> None:
    assert safe_text(SECRET[3:17], (SECRET,)) == MASK
    assert safe_text(SECRET[:12], (SECRET,)) == MASK


@settings(max_examples=300)
@given(
    scheme=st.sampled_from(["http", "https", "HTTPS"]),
    login=st.none() | st.from_regex(r"[a-z]{0,6}:SECRET-[0-9]{1,6}", fullmatch=True),
    host=st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9.-]{0,20}", fullmatch=True),
    port=st.none() | st.integers(1, 65535),
    path=st.from_regex(r"(/[a-z0-9._-]{0,8}){0,3}/?", fullmatch=True),
    query=st.none() | st.from_regex(r"api_key=sk-QQ[0-9a-z&=]{0,12}", fullmatch=True),
    fragment=st.none() | st.from_regex(r"sk-QQ[a-z]{0,5}", fullmatch=True),
)  # fmt: skip
def test_a_backend_name_keeps_no_credentials_and_compares_stably(
    scheme: str, login: str | None, host: str, port: int | None, path: str,
    query: str | None, fragment: str | None,
) -> None:  # fmt: skip
    netloc = f"{host}:{port}" if port is not None else host
    url = f"{scheme}://{f'{login}@' if login else ''}{netloc}{path}"
    url += f"?{query}" if query is not None else ""
    url += f"#{fragment}" if fragment is not None else ""
    name = backend_name(url)
    for secret in ("SECRET", "sk-QQ", "@"):
        assert secret not in name
    assert name == f"{scheme.lower()}://{netloc.lower()}{path}".rstrip("/")
    assert backend_name(name) == name  # what a record keeps compares equal to itself

import hashlib
import hmac

import pyarrow as pa

from journeymap.privacy import Pseudonymizer, pseudonymize


def test_pseudonym_is_truncated_hmac_sha256_of_the_raw_id():
    expected = hmac.new(b"k" * 20, b"541312140", hashlib.sha256).hexdigest()[:32]
    assert pseudonymize("541312140", "k" * 20) == expected
    assert pseudonymize("541312140", "k" * 20) != pseudonymize("541312140", "j" * 20)


def test_array_form_matches_the_scalar_form_and_keeps_nulls():
    p = Pseudonymizer("s" * 20)
    out = p.array(pa.chunked_array([["a", None, "b", "a"]])).to_pylist()
    assert out == [p("a"), None, p("b"), p("a")]
    assert p.array(pa.array([], pa.string())).to_pylist() == []

import pytest

from kakarot_workers.addresses import normalize_address
from kakarot_workers.errors import InputError


def test_evm_addresses_are_lower_cased():
    assert (
        normalize_address("bsc", " 0xABCDEF0123456789abcdef0123456789ABCDEF01 ")
        == "0xabcdef0123456789abcdef0123456789abcdef01"
    )


def test_solana_address_kept_as_is():
    ca = "So11111111111111111111111111111111111111112"
    assert normalize_address("sol", ca) == ca


@pytest.mark.parametrize(
    "chain, address, message",
    [
        ("bsc", "0x123", "expected 0x followed by 40 hex digits"),
        ("eth", "0x" + "g" * 40, "expected 0x followed by 40 hex digits"),
        ("sol", "0x" + "a" * 40, "base58"),
        ("sol", "O0Il" * 10, "base58"),
        ("dogechain", "0x" + "a" * 40, "unknown chain 'dogechain'"),
    ],
)
def test_bad_addresses_are_refused_with_the_reason(chain, address, message):
    with pytest.raises(InputError) as error:
        normalize_address(chain, address)
    assert message in str(error.value)

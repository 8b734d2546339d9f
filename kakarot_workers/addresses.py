"""Token contract address (CA) validation per chain family. Pure."""

from __future__ import annotations

import re

from kakarot_workers.errors import InputError

EVM_CHAINS = frozenset({"eth", "bsc", "base", "arb", "polygon", "avax", "op", "evm"})
SOLANA_CHAINS = frozenset({"sol"})
KNOWN_CHAINS = EVM_CHAINS | SOLANA_CHAINS

_EVM_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_BASE58_ADDRESS = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")


def check_chain(chain: str) -> str:
    """Return the chain name lower-cased, or raise naming the known ones."""
    name = chain.strip().lower()
    if name not in KNOWN_CHAINS:
        raise InputError(
            f"unknown chain {chain!r}: expected one of {', '.join(sorted(KNOWN_CHAINS))}"
        )
    return name


def normalize_address(chain: str, address: str) -> str:
    """Validate `address` for `chain` and return its canonical form (EVM: lower-case hex)."""
    value = address.strip()
    name = check_chain(chain)
    if name in EVM_CHAINS:
        if not _EVM_ADDRESS.match(value):
            raise InputError(
                f"invalid address {address!r} for chain {name}: "
                "expected 0x followed by 40 hex digits"
            )
        return value.lower()
    if not _BASE58_ADDRESS.match(value):
        raise InputError(
            f"invalid address {address!r} for chain {name}: "
            "expected a base58 string of 32-44 characters"
        )
    return value

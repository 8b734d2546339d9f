"""A real local EVM node (anvil, from npm) and Uniswap V2 contracts deployed on it.

Facts: ../shared/notes/local-evm-node.md. The binary is run directly (not the node wrapper) so
the pid we stop is anvil's own; HOME points at a temporary folder and `--prune-history` keeps it
from writing gigabytes of state.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from eth_abi import decode, encode
from eth_utils import keccak

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "node_modules" / "@uniswap" / "v2-core" / "build"
GAS = hex(6_000_000)
FEE_NUMERATOR, FEE_DENOMINATOR = 997, 1000


def find_anvil() -> str | None:
    """The platform binary npm installed (anvil-linux-amd64, anvil-linux-arm64, …), if any."""
    found = sorted((ROOT / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil"))
    if found and ARTIFACTS.is_dir():
        return str(found[0])
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def selector(signature: str) -> str:
    return "0x" + keccak(text=signature)[:4].hex()


class Anvil:
    """One anvil process on 127.0.0.1."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = _free_port()
        self.home = tempfile.mkdtemp(prefix="kakarot-anvil-")
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(timeout=10)
        self._ids = 0

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> Anvil:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--silent",
                "--prune-history",
            ],
            env={**os.environ, "HOME": self.home},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.rpc("eth_blockNumber")
                return self
            except httpx.HTTPError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("anvil did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.http.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def rpc(self, method: str, *params: Any) -> Any:
        self._ids += 1
        answer = self.http.post(
            self.http_url,
            json={"jsonrpc": "2.0", "id": self._ids, "method": method, "params": list(params)},
        ).json()
        if answer.get("error"):
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def reset(self) -> None:
        self.rpc("anvil_reset")


@dataclass
class Uniswap:
    """Factory, tokens and pairs on a node; swaps made the way a router would."""

    node: Anvil
    account: str
    factory: str = ""

    @classmethod
    def deploy(cls, node: Anvil) -> Uniswap:
        account = node.rpc("eth_accounts")[0]
        kit = cls(node, account)
        kit.factory = kit._deploy("UniswapV2Factory", ["address"], [account])
        return kit

    # --- transactions --------------------------------------------------------------------
    def _send(self, to: str | None, data: str) -> dict[str, Any]:
        tx: dict[str, Any] = {"from": self.account, "data": data, "gas": GAS}
        if to is not None:
            tx["to"] = to
        tx_hash = self.node.rpc("eth_sendTransaction", tx)
        deadline = time.monotonic() + 10
        while (receipt := self.node.rpc("eth_getTransactionReceipt", tx_hash)) is None:
            assert time.monotonic() < deadline, f"transaction {tx_hash} was never mined"
            time.sleep(0.01)
        assert receipt is not None and int(receipt["status"], 16) == 1, receipt
        return receipt

    def _deploy(self, name: str, types: list[str], args: list[Any]) -> str:
        artifact = json.loads((ARTIFACTS / f"{name}.json").read_text())
        data = "0x" + artifact["bytecode"].removeprefix("0x") + encode(types, args).hex()
        return self._send(None, data)["contractAddress"]

    def call(self, to: str, signature: str, types: list[str], args: list[Any], out: list[str]):
        data = selector(signature) + encode(types, args).hex()
        raw = self.node.rpc("eth_call", {"to": to, "data": data}, "latest")
        return decode(out, bytes.fromhex(raw[2:]))

    def transact(self, to: str, signature: str, types: list[str], args: list[Any]):
        return self._send(to, selector(signature) + encode(types, args).hex())

    # --- building blocks ------------------------------------------------------------------
    def token(self, supply: int = 10**30, decimals: int = 18) -> str:
        """A test ERC20 minting `supply` to our account. The v2-core test token's `decimals` is
        the constant 18; for another value its deployed code is rewritten (`anvil_setCode`, the
        storage stays) so that `decimals()` answers `decimals`."""
        address = self._deploy("ERC20", ["uint256"], [supply]).lower()
        if decimals != 18:
            code = bytes.fromhex(self.node.rpc("eth_getCode", address, "latest")[2:])
            self.node.rpc("anvil_setCode", address, "0x" + _with_decimals(code, decimals).hex())
        return address

    def pair(self, token_a: str, token_b: str, amount_a: int, amount_b: int) -> str:
        self.transact(
            self.factory, "createPair(address,address)", ["address", "address"], [token_a, token_b]
        )
        (pair,) = self.call(
            self.factory,
            "getPair(address,address)",
            ["address", "address"],
            [token_a, token_b],
            ["address"],
        )
        self.transfer(token_a, pair, amount_a)
        self.transfer(token_b, pair, amount_b)
        self.transact(pair, "mint(address)", ["address"], [self.account])
        return pair.lower()

    def transfer(self, token: str, to: str, amount: int) -> None:
        self.transact(token, "transfer(address,uint256)", ["address", "uint256"], [to, amount])

    def token0(self, pair: str) -> str:
        return self.call(pair, "token0()", [], [], ["address"])[0].lower()

    def reserves(self, pair: str) -> tuple[int, int]:
        r0, r1, _ = self.call(pair, "getReserves()", [], [], ["uint112", "uint112", "uint32"])
        return int(r0), int(r1)

    def swap(self, pair: str, token_in: str, amount_in: int) -> Swap:
        """Sell `amount_in` of `token_in` into the pair, at the x·y=k price less 0.3 %."""
        r0, r1 = self.reserves(pair)
        in_is_0 = self.token0(pair) == token_in.lower()
        r_in, r_out = (r0, r1) if in_is_0 else (r1, r0)
        fee_in = amount_in * FEE_NUMERATOR
        amount_out = fee_in * r_out // (r_in * FEE_DENOMINATOR + fee_in)
        self.transfer(token_in, pair, amount_in)
        outs = [0, amount_out] if in_is_0 else [amount_out, 0]
        receipt = self.transact(
            pair,
            "swap(uint256,uint256,address,bytes)",
            ["uint256", "uint256", "address", "bytes"],
            [*outs, self.account, b""],
        )
        swap_topic = (
            "0x" + keccak(text="Swap(address,uint256,uint256,uint256,uint256,address)").hex()
        )
        (entry,) = [e for e in receipt["logs"] if e["topics"][0] == swap_topic]
        return Swap(
            tx_hash=receipt["transactionHash"],
            log_index=int(entry["logIndex"], 16),
            block=int(receipt["blockNumber"], 16),
            token_in=token_in.lower(),
            amount_in=amount_in,
            amount_out=amount_out,
            reserves_after=self.reserves(pair),
        )


def _with_decimals(code: bytes, decimals: int) -> bytes:
    """The v2-core test ERC20's runtime code with `decimals()` returning `decimals` (0–255).

    The dispatcher's `PUSH4 0x313ce567 EQ PUSH2 entry JUMPI` leads to `JUMPDEST PUSH2 back
    PUSH2 getter JUMP`, and the getter is `JUMPDEST PUSH1 0x12 DUP2 JUMP`: its 0x12 is replaced.
    Each step is checked, so other code raises rather than being patched at a wrong place."""
    dispatch = code.find(bytes.fromhex("63313ce5671461"))
    if dispatch < 0 or code[dispatch + 9] != 0x57:
        raise ValueError("not the v2-core test ERC20: no decimals() in the dispatcher")
    entry = int.from_bytes(code[dispatch + 7 : dispatch + 9], "big")
    if code[entry : entry + 2] != b"\x5b\x61" or code[entry + 4] != 0x61 or code[entry + 7] != 0x56:
        raise ValueError("not the v2-core test ERC20: unexpected decimals() entry")
    getter = int.from_bytes(code[entry + 5 : entry + 7], "big")
    if code[getter : getter + 5] != bytes.fromhex("5b60128156"):
        raise ValueError("not the v2-core test ERC20: unexpected decimals() getter")
    patched = bytearray(code)
    patched[getter + 2] = decimals
    return bytes(patched)


@dataclass(frozen=True)
class Swap:
    tx_hash: str
    log_index: int
    block: int
    token_in: str
    amount_in: int
    amount_out: int
    reserves_after: tuple[int, int]

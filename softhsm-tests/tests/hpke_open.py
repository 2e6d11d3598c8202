#!/usr/bin/python3
"""Independent HPKE (RFC 9180) base-mode *open*, for Keybroker end-to-end tests.

The broker encrypts secrets with the Rust `hpke` crate.  To show that its output
is real, interoperable HPKE (not merely self-consistent with that crate), the
tests decrypt it with this script: a from-the-RFC implementation built only on
python3-cryptography primitives (X25519, HMAC-SHA256, AES-GCM).  It deliberately
uses no HPKE library and shares no code with the Rust `hpke` crate.

Scope: mode_base only (empty psk / psk_id), single-shot Open (sequence 0).
  KEM  0x0020  DHKEM(X25519, HKDF-SHA256)
  KDF  0x0001  HKDF-SHA256
  AEAD 0x0001  AES-128-GCM,  0x0002  AES-256-GCM

CLI (all values hex; --info and --aad may be the empty string):
  hpke_open.py open --aead {1,2} --sk SK --enc ENC --ct CT --info INFO --aad AAD
      prints the plaintext as hex and exits 0; on any failure (bad tag, wrong
      key, malformed input) prints a one-line reason to stderr and exits 1.
  hpke_open.py self-test
      known-answer vectors + seal/open round trip; prints "ok: N vectors" and
      exits 0, or lists the mismatches on stderr and exits 1.
"""
import argparse
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

KEM_ID, KDF_ID = 0x0020, 0x0001
AEAD_NK = {1: 16, 2: 32}  # aead_id -> key length Nk (bytes)
NN, NH, NSECRET = 12, 32, 32  # nonce length, HKDF-SHA256 output, DHKEM shared secret
MODE_BASE = 0


def i2osp(n, length):
    return n.to_bytes(length, "big")


def hmac_sha256(key, data):
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def labeled_extract(suite_id, salt, label, ikm):
    # HKDF-Extract(salt, "HPKE-v1" || suite_id || label || ikm); empty salt = Nh zero bytes
    return hmac_sha256(salt or b"\x00" * NH, b"HPKE-v1" + suite_id + label + ikm)


def labeled_expand(suite_id, prk, label, info, length):
    # HKDF-Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info, L)
    labeled_info = i2osp(length, 2) + b"HPKE-v1" + suite_id + label + info
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac_sha256(prk, block + labeled_info + bytes([counter]))
        out += block
        counter += 1
    return out[:length]


KEM_SUITE_ID = b"KEM" + i2osp(KEM_ID, 2)


def hpke_suite_id(aead_id):
    return b"HPKE" + i2osp(KEM_ID, 2) + i2osp(KDF_ID, 2) + i2osp(aead_id, 2)


def raw_public(private_key):
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def extract_and_expand(dh, kem_context):
    eae_prk = labeled_extract(KEM_SUITE_ID, b"", b"eae_prk", dh)
    return labeled_expand(KEM_SUITE_ID, eae_prk, b"shared_secret", kem_context, NSECRET)


def decap(enc, sk_r):
    """DHKEM Decap: returns (shared_secret, pkRm)."""
    sk = X25519PrivateKey.from_private_bytes(sk_r)
    pk_rm = raw_public(sk)
    try:
        dh = sk.exchange(X25519PublicKey.from_public_bytes(enc))
    except ValueError:  # RFC 9180 7.1.4: an all-zero DH output must be rejected
        raise ValueError("invalid enc: X25519 result is all-zero (small-order point)") from None
    return extract_and_expand(dh, enc + pk_rm), pk_rm


def key_schedule_base(aead_id, shared_secret, info):
    """KeySchedule(mode_base, shared_secret, info, psk="", psk_id=""): returns (key, base_nonce)."""
    sid = hpke_suite_id(aead_id)
    psk_id_hash = labeled_extract(sid, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(sid, b"", b"info_hash", info)
    context = bytes([MODE_BASE]) + psk_id_hash + info_hash
    secret = labeled_extract(sid, shared_secret, b"secret", b"")
    key = labeled_expand(sid, secret, b"key", context, AEAD_NK[aead_id])
    base_nonce = labeled_expand(sid, secret, b"base_nonce", context, NN)
    return key, base_nonce


def seq0_nonce(base_nonce):
    return bytes(a ^ b for a, b in zip(base_nonce, i2osp(0, NN)))  # base_nonce XOR I2OSP(seq=0, Nn)


def open_base(aead_id, sk_r, enc, ct, info, aad):
    """Single-shot base-mode Open; raises InvalidTag / ValueError on failure."""
    if aead_id not in AEAD_NK:
        raise ValueError(f"unsupported aead id {aead_id}")
    if len(sk_r) != 32 or len(enc) != 32:
        raise ValueError("sk and enc must be 32 bytes each")
    shared_secret, _ = decap(enc, sk_r)
    key, base_nonce = key_schedule_base(aead_id, shared_secret, info)
    return AESGCM(key).decrypt(seq0_nonce(base_nonce), ct, aad)


def _seal_base(aead_id, pk_r, pt, info, aad):
    """Single-shot base-mode Seal with a fresh ephemeral key (self-test only)."""
    sk_e = X25519PrivateKey.generate()
    enc = raw_public(sk_e)
    dh = sk_e.exchange(X25519PublicKey.from_public_bytes(pk_r))
    key, base_nonce = key_schedule_base(aead_id, extract_and_expand(dh, enc + pk_r), info)
    return enc, AESGCM(key).encrypt(seq0_nonce(base_nonce), pt, aad)


# Known-answer vectors: mode 0, kem_id 32, kdf_id 1; first encryption (sequence number 0).
# Source: official CFRG test-vectors.json at cfrg/draft-irtf-cfrg-hpke commit 5f503c5
# (the RFC 9180 vectors; git blob 514dd8bbcc4339f99ad9cf527007523f94668582, also shipped as
# rozbb/rust-hpke test-vectors-5f503c5.json and cloudflare/circl vectors_rfc9180_5f503c5.json.gz).
#   aead_id 1: JSON entry 0 == RFC 9180 Appendix A.1.1 (values cross-checked against the RFC text)
#   aead_id 2: JSON entry 4 (not printed in the RFC; only in the JSON)
_INFO = "4f6465206f6e2061204772656369616e2055726e"  # "Ode on a Grecian Urn"
_PT = "4265617574792069732074727574682c20747275746820626561757479"  # "Beauty is truth, truth beauty"
VECTORS = [
    dict(aead_id=1, info=_INFO, aad="436f756e742d30", pt=_PT,
         skRm="4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
         pkRm="3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
         enc="37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
         shared_secret="fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
         key="4531685d41d65f03dc48f6b8302c05b0", base_nonce="56d890e5accaaf011cff4b7d",
         ct="f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
            "6d8770ac83d07bea87e13c512a"),
    dict(aead_id=2, info=_INFO, aad="436f756e742d30", pt=_PT,
         skRm="497b4502664cfea5d5af0b39934dac72242a74f8480451e1aee7d6a53320333d",
         pkRm="430f4b9859665145a6b1ba274024487bd66f03a2dd577d7753c68d7d7d00c00c",
         enc="6c93e09869df3402d7bf231bf540fadd35cd56be14f97178f0954db94b7fc256",
         shared_secret="3101c54c3a4f87439eaac080699ed9bbcc726ffe44e860c0424ccb7e3e2ead7b",
         key="f50b0609186798729ed0564b36ef2ef8044f1f9d05636874d1f46c819c7a669f",
         base_nonce="151d9929e2449747889bc923",
         ct="e5d84cd531cfb583096e7cfa9641bd3079cf3a91cda813c52deb5f512be99319"
            "80a41de125a925cdad859d5b7a"),
]


def self_test():
    failures = []
    for i, v in enumerate(VECTORS):
        h = {k: bytes.fromhex(x) if isinstance(x, str) else x for k, x in v.items()}
        ss, pk_rm = decap(h["enc"], h["skRm"])
        key, base_nonce = key_schedule_base(v["aead_id"], ss, h["info"])
        tag = f"vector {i} (aead {v['aead_id']})"
        got = dict(pkRm=pk_rm, shared_secret=ss, key=key, base_nonce=base_nonce)
        try:
            got["pt"] = open_base(v["aead_id"], h["skRm"], h["enc"], h["ct"], h["info"], h["aad"])
        except (InvalidTag, ValueError) as e:
            failures.append(f"{tag}: open failed: {type(e).__name__} {e}")
        for name, value in got.items():
            if value != h[name]:
                failures.append(f"{tag}: {name} = {value.hex()}, want {v[name]}")

    # Round trip, independent of the vectors: open(seal(x)) == x, and a different key fails.
    sk = X25519PrivateKey.generate()
    sk_raw, other = (k.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
                     for k in (sk, X25519PrivateKey.generate()))
    for aead_id in AEAD_NK:
        for pt, info, aad in [(b"round trip secret", b"info", b"aad"), (b"", b"", b"")]:
            enc, ct = _seal_base(aead_id, raw_public(sk), pt, info, aad)
            for label, args in [("same key", (sk_raw, enc, ct, info, aad)),
                                ("different key", (other, enc, ct, info, aad)),
                                ("different aad", (sk_raw, enc, ct, info, aad + b"x")),
                                ("different info", (sk_raw, enc, ct, info + b"x", aad))]:
                try:
                    ok = open_base(aead_id, *args) == pt
                except InvalidTag:
                    ok = False
                if ok != (label == "same key"):
                    failures.append(f"round trip (aead {aead_id}, pt len {len(pt)}): {label}: "
                                    f"open {'succeeded' if ok else 'failed'}")

    print("".join(f"FAIL: {f}\n" for f in failures), end="", file=sys.stderr)
    if not failures:
        print(f"ok: {len(VECTORS)} vectors")
    return 1 if failures else 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors: one line on stderr, exit 1 (like any failure)
        self.exit(1, f"error: {self.prog}: {message}\n")


def _hex(text):
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not valid hex: {text[:40]!r}") from None


def main(argv):
    ap = _Parser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    op = sub.add_parser("open", help="open a single-shot base-mode HPKE ciphertext")
    op.add_argument("--aead", type=int, required=True, choices=sorted(AEAD_NK))
    for name in ("sk", "enc", "ct", "info", "aad"):
        op.add_argument("--" + name, required=True, metavar="HEX", type=_hex)
    sub.add_parser("self-test", help="run known-answer and round-trip checks")
    a = ap.parse_args(argv)
    if a.cmd == "self-test":
        return self_test()
    try:
        print(open_base(a.aead, a.sk, a.enc, a.ct, a.info, a.aad).hex())
        return 0
    except InvalidTag:
        reason = "AEAD tag mismatch (wrong key, enc, info, aad or ciphertext)"
    except ValueError as e:
        reason = str(e)
    print(f"error: HPKE open failed: {reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Who published a version: manifests signed at publish time, verified before any artifact that runs code loads.

The manifest's own checksum proves its integrity, not its authorship: anyone who can write the store can write a
re-sealed manifest that verifies. A signature by a key that only the publishers may use (an AWS KMS asymmetric
key, ECC_NIST_P256; the template's key policy lets only the publishing roles call kms:Sign) proves that a
publisher wrote it. The signed statement names the model, the version and the manifest's checksum, which covers
the sha256 of every artifact: one signature vouches for every byte of the version.

Where the `cryptography` package is installed (a laptop, CI), readers verify locally with the key's public half,
fetched once per process through kms:GetPublicKey and cached: a model load costs no KMS call. The Lambda layers
do not ship it (16 MiB; the scikit-learn serving bundle has no room for it), so there a model load asks KMS
(kms:Verify): one call per load of a pickled version, never per request. Verification happens before an artifact
that runs code when loaded (a pickle: model.joblib) is handed to anything; see ModelStore.artifact.

A store opened without a key (a laptop, tests) neither signs nor verifies. With a key, `required` (the default)
refuses unsigned versions; `required=False` verifies the signed ones and accepts unsigned ones (for moving a store
whose versions predate signing).
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from sklambda.errors import IntegrityError, VersionRefused
from sklambda.records import ManifestSignature, ServedManifest

if TYPE_CHECKING:
    from sklambda.manifest import Manifest

SIGNING_ALGORITHM = "ECDSA_SHA_256"
_STATEMENT_FORMAT = "sklambda-manifest-v1\nname={name}\nversion={version}\nsha256={sha256}\n"


def signed_statement(manifest: Manifest | ServedManifest) -> bytes:
    """The bytes that are signed: short (KMS signs at most 4 KB raw) and naming what the signature is about."""
    return _STATEMENT_FORMAT.format(
        name=manifest.name, version=manifest.version, sha256=manifest.body_sha256()
    ).encode()


class SigningKey(Protocol):
    """An asymmetric key that can sign (publishers only) and give its public half (every reader)."""

    key_id: str

    def sign(self, message: bytes) -> bytes:
        """ECDSA_SHA_256 over the raw message; DER-encoded signature."""
        ...

    def public_key_der(self) -> bytes:
        """The public key as DER SubjectPublicKeyInfo."""
        ...

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether the key service itself says `signature` is this key's over `message`."""
        ...


def can_verify_locally() -> bool:
    return importlib.util.find_spec("cryptography") is not None


class ManifestSigning:
    """A store's signing policy: sign every manifest it publishes, verify before loading code artifacts.

    `verify_locally`: check signatures with the cached public key (needs `cryptography`); False asks the key
    service each time; None picks local verification when `cryptography` is installed."""

    def __init__(self, key: SigningKey, *, required: bool = True, verify_locally: bool | None = None) -> None:
        self.key = key
        self.required = required
        self.verify_locally = can_verify_locally() if verify_locally is None else verify_locally

    @functools.cached_property
    def _local_check(self) -> Callable[[bytes, bytes], bool]:
        # Built once per process (a warm process reuses it): the public key is fetched once.
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        public_key = load_der_public_key(self.key.public_key_der())
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise VersionRefused(f"signing key {self.key.key_id} is not an elliptic-curve key ({SIGNING_ALGORITHM})")

        def check(message: bytes, signature: bytes) -> bool:
            try:
                public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            except (InvalidSignature, ValueError):
                return False
            return True

        return check

    def _signature_holds(self, message: bytes, signature: bytes) -> bool:
        if self.verify_locally:
            return self._local_check(message, signature)
        return self.key.verify(message, signature)

    def sign(self, manifest: Manifest) -> Manifest:
        """The manifest with its signature (call once its version and artifacts are final)."""
        signature = self.key.sign(signed_statement(manifest))
        return manifest.model_copy(
            update={
                "signature": ManifestSignature(
                    key_id=self.key.key_id, algorithm=SIGNING_ALGORITHM, value=base64.b64encode(signature).decode()
                )
            }
        )

    def verify(self, manifest: Manifest | ServedManifest) -> None:
        """Raise VersionRefused (unsigned, when signatures are required) or IntegrityError (a signature that does
        not verify with this store's key) before anything of the version is loaded."""
        where = f"{manifest.name} v{manifest.version}"
        signature = manifest.signature
        if signature is None:
            if self.required:
                raise VersionRefused(
                    f"{where} is not signed, and this deployment loads only versions signed by {self.key.key_id}; "
                    "publish it again through the pipeline (it signs)"
                )
            return
        if signature.algorithm != SIGNING_ALGORITHM:
            raise IntegrityError(f"{where} is signed with {signature.algorithm}, not {SIGNING_ALGORITHM}; refused")
        try:
            signature_bytes = base64.b64decode(signature.value, validate=True)
        except (binascii.Error, ValueError):
            signature_bytes = b""
        if not signature_bytes or not self._signature_holds(signed_statement(manifest), signature_bytes):
            raise IntegrityError(
                f"{where}: its signature does not verify with {self.key.key_id}; it was not written by a publisher "
                "of this store (or was altered since): refusing to load it"
            )


def kms_signing(key_id: str | None, *, required: bool = True) -> ManifestSigning | None:
    """The signing policy for a configured KMS key id or ARN (None when none is configured: no signatures)."""
    if not key_id:
        return None
    from sklambda.aws import KmsSigningKey  # boto3 only where a key is configured

    return ManifestSigning(KmsSigningKey(key_id), required=required)

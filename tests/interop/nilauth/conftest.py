"""Import shim for the client package.

`nilauth_credit_middleware/__init__.py` imports `user_id_extractors`, which
imports `nuc.envelope` for an optional NUC-token user-id extractor. The `nuc`
package drags in cosmpy (gRPC, protobuf) and secp256k1 (a C build), and
none of the code these tests run uses it. So a placeholder `nuc.envelope`
is registered before the client is imported; it raises if anything does
use it, so it cannot hide a real dependency. Everything the tests exercise
(CreditLockingClient, @metered, the cost logic) is the real package code.
"""

import sys
import types


class NucTokenEnvelope:  # noqa: D101 - placeholder, see module docstring
    @staticmethod
    def parse(*_args, **_kwargs):
        raise RuntimeError("nuc is not installed in the interop environment")


if "nuc.envelope" not in sys.modules:
    nuc = types.ModuleType("nuc")
    envelope = types.ModuleType("nuc.envelope")
    envelope.NucTokenEnvelope = NucTokenEnvelope
    nuc.envelope = envelope
    sys.modules["nuc"] = nuc
    sys.modules["nuc.envelope"] = envelope

"""The Temporal data converter every client and worker of ours uses: the SDK's default converters, with
`json/plain` payloads encoded and decoded by msgspec instead of `json` + the SDK's reflection.

Same wire format as the default converter (`json/plain` UTF-8 JSON), so the `temporal` CLI, the Temporal
UI and clients with the SDK's default converter read and write the same payloads. Decoding into a
dataclass validates it (a wrong type names the field: "Expected `str`, got `int` - at `$.step_id`");
unknown fields are ignored, as the SDK does. The SDK's converter rebuilt every dataclass by reflection on
each decode (`typing.get_type_hints` per dataclass per payload); msgspec compiles a decoder once per type
(bench/engine.py).
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import datetime
from typing import Any

import msgspec
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    AdvancedJSONEncoder,
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    EncodingPayloadConverter,
    JSONPlainPayloadConverter,
)

ENCODING = "json/plain"
_fallback_encoder = AdvancedJSONEncoder()


def _enc_hook(value: Any) -> Any:
    """Types msgspec does not encode itself: Pydantic models as their JSON dump; anything else as the SDK's
    encoder would (iterables as lists, `dict()` methods), or a TypeError naming the type."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return _fallback_encoder.default(value)


class MsgspecJSONPayloadConverter(EncodingPayloadConverter):
    """`json/plain` payloads through msgspec, with one compiled decoder per type hint."""

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
        self._plain = msgspec.json.Decoder()
        self._decoders: dict[Any, msgspec.json.Decoder[Any] | None] = {}  # None: msgspec cannot type it
        self._lock = threading.Lock()  # workers decode on several threads
        self._sdk = JSONPlainPayloadConverter()

    @property
    def encoding(self) -> str:
        return ENCODING

    def to_payload(self, value: Any) -> Payload | None:
        return Payload(metadata={"encoding": b"json/plain"}, data=self._encoder.encode(value))

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        if type_hint is None or type_hint is Any or type_hint is object:
            return self._decode(self._plain, payload)
        try:
            decoder = self._decoders[type_hint]
        except KeyError:
            decoder = self._compile(type_hint)
        except TypeError:  # an unhashable hint
            decoder = None
        if decoder is None:
            validate = getattr(type_hint, "model_validate", None)
            if callable(validate):  # a Pydantic model: built from its JSON the Pydantic way
                return validate(self._decode(self._plain, payload))
            return self._sdk.from_payload(payload, type_hint)
        return self._decode(decoder, payload)

    @staticmethod
    def _decode(decoder: msgspec.json.Decoder[Any], payload: Payload) -> Any:
        try:
            return decoder.decode(payload.data)
        except msgspec.DecodeError as err:  # includes ValidationError: says what and where
            raise TypeError(f"payload does not fit: {err}") from err

    def _compile(self, type_hint: Any) -> msgspec.json.Decoder[Any] | None:
        with self._lock:
            if type_hint in self._decoders:
                return self._decoders[type_hint]
            decoder: msgspec.json.Decoder[Any] | None = None
            if _msgspec_decodes(type_hint):
                try:
                    # Not strict: 3.0 and "3" are 3 for an int, as a `temporal` CLI user would expect.
                    decoder = msgspec.json.Decoder(type_hint, strict=False)
                except TypeError:  # a type msgspec does not support: the SDK's reflection decodes it
                    decoder = None
            self._decoders[type_hint] = decoder
            return decoder


_PLAIN_TYPES = (str, int, float, bool, bytes, dict, list, tuple, set, frozenset, datetime, uuid.UUID)


def _msgspec_decodes(type_hint: Any) -> bool:
    """Dataclasses, plain types and typing constructs (list[str], X | None, …); any other class (a Pydantic
    model, say) is built its own way."""
    if not isinstance(type_hint, type):
        return True  # list[str], dict[str, Any], Optional[…], Literal[…]
    return dataclasses.is_dataclass(type_hint) or issubclass(type_hint, _PLAIN_TYPES)


_json = MsgspecJSONPayloadConverter()
_CONVERTERS = tuple(
    _json if c.encoding == ENCODING else c for c in DefaultPayloadConverter.default_encoding_payload_converters
)


class PayloadConverter(CompositePayloadConverter):
    """The SDK's default converters in the SDK's order, with JSON through msgspec. The SDK builds one per
    workflow and activity: the converters themselves are shared."""

    def __init__(self) -> None:
        super().__init__(*_CONVERTERS)


DATA_CONVERTER = DataConverter(payload_converter_class=PayloadConverter)

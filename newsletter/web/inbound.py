"""Stream-parse SendGrid's Inbound Parse multipart body into raw field bytes.

Starlette's form parser decodes every field with one charset; Inbound Parse sends each
field in the charset named by its `charsets` field, so we keep bytes and decode later.
Attachment contents are counted, never kept: only their names and sizes are stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from newsletter.replies import InboundAttachment, RawInbound

MAX_FIELDS = 200


class InboundFormError(ValueError):
    pass


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)
    size: int = 0


async def parse_inbound(content_type: str, stream: AsyncIterator[bytes]) -> RawInbound:
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise InboundFormError("expected multipart/form-data")
    fields: dict[str, bytes] = {}
    attachments: list[InboundAttachment] = []
    part = _Part()
    header_name = bytearray()
    header_value = bytearray()
    disposition = b""

    def on_part_begin() -> None:
        nonlocal disposition, part
        disposition = b""
        part = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        nonlocal disposition
        if bytes(header_name).lower() == b"content-disposition":
            disposition = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(disposition)
        name = options.get(b"name")
        if name is None:
            raise InboundFormError("a part has no name")
        part.name = name.decode("utf-8", "replace")
        if b"filename" in options:
            part.filename = options[b"filename"].decode("utf-8", "replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.filename is not None:
            part.size += end - start  # attachment contents are counted, not kept
        else:
            part.data.extend(data[start:end])

    def on_part_end() -> None:
        if len(fields) + len(attachments) >= MAX_FIELDS:
            raise InboundFormError("too many parts")
        if part.filename is not None:
            attachments.append(
                InboundAttachment(field=part.name, filename=part.filename, size=part.size)
            )
        else:
            fields[part.name] = bytes(part.data)

    ended = False

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_end": on_end,
        },
    )
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise InboundFormError("malformed multipart body") from exc
    # A body cut short ends without its closing boundary.
    if not ended:
        raise InboundFormError("incomplete multipart body")
    if not fields.keys() & {"from", "envelope", "email"}:
        raise InboundFormError("no `from` field; is this SendGrid Inbound Parse (not raw mode)?")
    return RawInbound(fields=fields, attachments=attachments)

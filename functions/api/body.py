"""Request bodies as strict JSON: every body the standard parser would choke on becomes a JSONDecodeError, which the
resolver's validation turns into a 400 (`malformed JSON body: ...`), never a 500.

`json.loads` alone raises RecursionError for deep nesting, a bare ValueError for integer literals over Python's digit
limit, and accepts NaN/Infinity, which are not JSON. A body that is not UTF-8 never reaches the parser: Powertools
decodes it first, so `is_undecodable_body` lets the error handlers tell that UnicodeDecodeError from a real bug.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from typing import Any, NoReturn

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

MAX_INTEGER_DIGITS = sys.get_int_max_str_digits()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")


def parse_json_body(text: str) -> Any:
    """The resolver's `json_body_deserializer`: json.loads, with every failure a JSONDecodeError naming the problem."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("arrays or objects nested too deeply", text, 0) from None
    except ValueError as error:
        message = str(error)
        if "integer string conversion" in message:
            message = f"an integer literal has more than {MAX_INTEGER_DIGITS} digits"
        raise json.JSONDecodeError(message, text, 0) from None


def is_undecodable_body(event: APIGatewayProxyEventV2, error: UnicodeDecodeError) -> bool:
    """True when `error` came from decoding this request's body (API Gateway base64-encodes bodies it cannot pass
    as text); any other UnicodeDecodeError is a bug and stays a 500."""
    if not (event.is_base64_encoded and event.body):
        return False
    try:
        return base64.b64decode(event.body) == error.object
    except binascii.Error:
        return False

"""A request's body as the admin API reads it: at most a size limit, and an HTTP error when it does not arrive.

What can go wrong is the client's doing, so each is a 4xx JSON error (``app._register_errors``), never a 500:
more than the limit (413), a body that stops arriving before its end (408: under ``appliance sidecar`` every
read waits at most ``slow_clients.CLIENT_TIMEOUT``), a malformed chunked body or one cut short (400). After any
of them gunicorn closes the connection, since where the next request would start is unknown.
"""

from __future__ import annotations

from flask import request
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import BadRequest, ClientDisconnected, RequestEntityTooLarge, RequestTimeout

from appliance.sidecar.slow_clients import CLIENT_TIMEOUT


def read_body(limit: int) -> bytes:
    """The body of the current request, at most ``limit`` bytes; raises 413, 408 or 400."""
    too_large = RequestEntityTooLarge(f"the body may hold at most {limit} bytes")
    if (request.content_length or 0) > limit:
        raise too_large
    try:
        raw = request.stream.read(limit + 1)
    except TimeoutError:  # a chunked body: gunicorn's stream, unwrapped
        raise _stopped() from None
    except ClientDisconnected as exc:  # a body with a Content-Length: werkzeug's stream hides why it ended
        if isinstance(exc.__context__, TimeoutError):
            raise _stopped() from None
        raise BadRequest("the body ended before the length it announced") from None
    except (ParseException, NoMoreData) as exc:
        raise BadRequest(f"the chunked body is malformed or cut short ({type(exc).__name__})") from None
    if len(raw) > limit:
        raise too_large
    return raw


def _stopped() -> RequestTimeout:
    return RequestTimeout(f"the body stopped arriving: nothing came for {CLIENT_TIMEOUT:g} s")

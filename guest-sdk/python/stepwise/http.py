"""A small blocking HTTP client for step bodies, over `wasi:http`.

The host lets a guest reach the network only inside a step body, so that a
request runs once and its result is journaled; called anywhere else, a
request raises an error that names the rule:

    from stepwise import http

    user = ctx.step.run("get-user", lambda: http.get(f"{api}/users/{uid}").json())

Python's own `urllib` and `requests` do not work in a component (there are
no sockets); use this module.
"""

import json as _json
from typing import Any, Dict, List, Optional, Tuple, Union

from componentize_py_types import Err
from wit_world.imports import outgoing_handler
from wit_world.imports import streams
from wit_world.imports import wasi_http_types as _http

from ._errors import NonRetriableError

__all__ = ["HttpError", "Response", "get", "post_json", "request"]

_CHUNK = 64 * 1024


class HttpError(Exception):
    """A request that could not be made or answered (retriable: the network
    or the server may recover), or a 4xx/5xx from `raise_for_status()`."""


class Response:
    """A response, read whole: `status`, `headers` (lower-case names to
    values), the raw `body` bytes, and `text()` / `json()`."""

    def __init__(self, status: int, headers: List[Tuple[str, bytes]], body: bytes):
        self.status = status
        self.headers: Dict[str, str] = {}
        for name, value in headers:
            text = value.decode("latin-1")
            self.headers[name] = f"{self.headers[name]}, {text}" if name in self.headers else text
        self.body = body

    @property
    def ok(self) -> bool:
        """Whether the status is below 400."""
        return self.status < 400

    def text(self) -> str:
        """The body as UTF-8 text."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(f"the HTTP {self.status} response body is not UTF-8") from None

    def json(self) -> Any:
        """The body as JSON."""
        try:
            return _json.loads(self.body)
        except ValueError as error:
            raise HttpError(f"the HTTP {self.status} response body is not JSON: {error}") from None

    def raise_for_status(self) -> "Response":
        """Raises `HttpError` (retriable, so the step is retried) for a 4xx or
        5xx status; returns the response otherwise."""
        if self.status >= 400:
            raise HttpError(f"HTTP {self.status}: {self.body.decode('utf-8', 'replace').strip()}")
        return self

    def __repr__(self):
        return f"Response(status={self.status}, {len(self.body)} bytes)"


def get(url: str, headers: Optional[Dict[str, str]] = None) -> Response:
    """`GET url`."""
    return request("GET", url, headers=headers)


def post_json(url: str, body: Any, headers: Optional[Dict[str, str]] = None) -> Response:
    """`POST url` with `body` as JSON."""
    try:
        data = _json.dumps(body, separators=(",", ":")).encode()
    except (TypeError, ValueError) as error:
        raise NonRetriableError(f"the request body is not JSON-serialisable: {error}") from None
    all_headers = {"content-type": "application/json", **(headers or {})}
    return request("POST", url, headers=all_headers, body=data)


_METHODS = {
    "GET": _http.Method_Get, "HEAD": _http.Method_Head, "POST": _http.Method_Post,
    "PUT": _http.Method_Put, "DELETE": _http.Method_Delete, "CONNECT": _http.Method_Connect,
    "OPTIONS": _http.Method_Options, "TRACE": _http.Method_Trace, "PATCH": _http.Method_Patch,
}


def request(
    method: str, url: str, headers: Optional[Dict[str, str]] = None, body: Union[bytes, str, None] = None
) -> Response:
    """Sends a request and reads the whole response. Works inside a step body
    only (the host refuses it elsewhere, and this raises `HttpError`)."""
    scheme, authority, path = _split(url)
    upper = method.upper()
    wit_method = _METHODS[upper]() if upper in _METHODS else _http.Method_Other(upper)
    if isinstance(body, str):
        body = body.encode()
    pairs = [(k.lower(), str(v).encode()) for k, v in (headers or {}).items()]
    if body and not any(name == "content-length" for name, _ in pairs):
        # A known length rather than a chunked body: some servers refuse those.
        pairs.append(("content-length", str(len(body)).encode()))
    try:
        fields = _http.Fields.from_list(pairs)
    except Err as error:
        raise NonRetriableError(f"invalid request header for {url}: {error.value}") from None

    def failed(what: str, code=None) -> HttpError:
        if isinstance(code, _http.ErrorCode_InternalError) and code.value:
            detail = code.value
        elif code is not None:
            detail = type(code).__name__.replace("ErrorCode_", "")
        else:
            detail = "refused by the host"
        return HttpError(f"HTTP request to {url} failed ({what}): {detail}")

    outgoing = _http.OutgoingRequest(fields)
    try:
        outgoing.set_method(wit_method)
        outgoing.set_scheme(scheme)
        outgoing.set_authority(authority)
        outgoing.set_path_with_query(path)
    except Err:
        raise NonRetriableError(f"invalid request to {url}") from None
    try:
        outgoing_body = outgoing.body()
    except Err:
        raise failed("opening the body") from None
    if body:
        try:
            with outgoing_body.write() as stream:
                for start in range(0, len(body), 4096):
                    stream.blocking_write_and_flush(body[start:start + 4096])
        except Err:
            raise failed("writing the body") from None
    try:
        pending = outgoing_handler.handle(outgoing, None)
    except Err as error:
        raise failed("sending", error.value) from None
    try:
        _http.OutgoingBody.finish(outgoing_body, None)
    except Err as error:
        raise failed("finishing the body", error.value) from None
    with pending:
        with pending.subscribe() as ready:
            ready.block()
        answer = pending.get()
    if answer is None or isinstance(answer, Err):
        raise failed("waiting for the response")
    if isinstance(answer.value, Err):
        raise failed("waiting for the response", answer.value.value)
    with answer.value.value as response:
        status = response.status()
        with response.headers() as fields:
            header_list = fields.entries()
        try:
            incoming = response.consume()
        except Err:
            raise failed("reading the body") from None
        chunks = []
        with incoming.stream() as stream:
            while True:
                try:
                    chunks.append(stream.blocking_read(_CHUNK))
                except Err as error:
                    if isinstance(error.value, streams.StreamError_Closed):
                        break
                    detail = error.value.value.to_debug_string()
                    raise HttpError(f"HTTP request to {url} failed while reading the body: {detail}") from None
        with _http.IncomingBody.finish(incoming):
            pass  # the trailers are not read
    return Response(status, header_list, b"".join(chunks))


def _split(url: str):
    """The scheme, authority and path-with-query of an http(s) URL."""
    invalid = NonRetriableError(f"invalid URL {url!r}: expected http://host[:port]/path or https://...")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise invalid
    scheme = scheme.lower()
    if scheme == "http":
        wit_scheme = _http.Scheme_Http()
    elif scheme == "https":
        wit_scheme = _http.Scheme_Https()
    else:
        raise invalid
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if not authority:
        raise invalid
    if not path:
        path = "/"
    elif path.startswith("?"):
        path = "/" + path
    return wit_scheme, authority, path

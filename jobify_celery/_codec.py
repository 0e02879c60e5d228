"""The wire format: how a Jobify call becomes a Celery message and back.

A job crosses the broker as an ordinary Celery message of protocol 2, so
Flower, ``celery inspect`` and plain Celery clients read and write it:

* ``args`` / ``kwargs``: the call's arguments, each dumped by the app's
  ``dumper`` for its parameter's annotation. For a default ``Jobify()`` a
  value the annotation reads back travels as plain JSON (a dataclass as its
  fields, a ``Decimal`` as a string, a ``datetime`` as ISO 8601: ``_plain``);
  what it cannot read back (an ``Any`` parameter holding a dataclass, say) is
  tagged the way Jobify's extended JSON serializer tags it, and tagged values
  load too. Plain JSON values are left as they are, so
  ``send_task("mod:add", [1, 2])`` is a valid Jobify call.
* one header, ``jobify``: ``{"v": 1, "exec_at": <ISO 8601>, "request_state":
  {...}}``, the planned time and what the producer's outer middleware stored
  in ``OuterContext.request_state``. A message without it is a plain Celery
  call: the worker plans it for its ETA or for the moment it arrives.
* the result: the function's return value, dumped the same way for the
  function's return annotation.

Everything here is a pure function of its inputs; the broker-facing code
lives elsewhere.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from jobify_celery._coerce import Coercer
from jobify_celery._errors import ArgumentLoadError
from jobify_celery._plain import NOT_PLAIN, readable

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = (
    "HEADER_KEY",
    "RESERVED_STATE_KEYS",
    "WIRE_VERSION",
    "CronTick",
    "Envelope",
    "ValueCodec",
    "decode_call",
    "decode_header",
    "encode_call",
    "encode_header",
    "ensure_json",
    "positional_names",
    "publish_token",
    "tagged_classes",
    "wire_signature",
)

HEADER_KEY: Final[str] = "jobify"
WIRE_VERSION: Final[int] = 1
RESERVED_STATE_KEYS: Final[frozenset[str]] = frozenset(
    {"celery_request", "celery_task", "attempt", "cron_run"}
)

_PRIMITIVES: Final = (str, int, float, bool, type(None))
#: Reads a header straight with the C scanner (``json.loads`` wraps it in two
#: Python calls and a whitespace scan, on every message a worker executes).
_HEADER_DECODER: Final = json.JSONDecoder()
_VAR_POSITIONAL: Final = inspect.Parameter.VAR_POSITIONAL
_VAR_KEYWORD: Final = inspect.Parameter.VAR_KEYWORD
_POSITIONAL: Final = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)

DumpFn = Callable[[Any, Any], Any]
LoadFn = Callable[[Any, Any], Any]
TagFn = Callable[[Any], Any]
UntagHook = Callable[[dict[str, Any]], Any]


class ValueCodec:
    """Turns one value into JSON for its annotation, and back.

    Built once per app from its ``dumper``/``loader`` and serializer:
    ``tag``/``untag_hook`` are the extended JSON serializer's encoder and
    decoder hook when the app uses it, ``coerce_plain`` is on when the app
    has no loader of its own (then plain JSON from a Celery client is read
    into the annotated type by a :class:`jobify_celery._coerce.Coercer`).
    """

    __slots__ = ("_coerce", "_coerce_plain", "_dump", "_load", "_tag", "_untag_hook")

    def __init__(
        self,
        *,
        dump: DumpFn,
        load: LoadFn,
        tag: TagFn | None,
        untag_hook: UntagHook | None,
        coerce_plain: bool,
    ) -> None:
        self._dump = dump
        self._load = load
        self._tag = tag
        self._untag_hook = untag_hook
        self._coerce_plain = coerce_plain
        self._coerce = Coercer()

    def dump(self, value: Any, hint: Any) -> Any:  # noqa: ANN401
        """Return the JSON-compatible form of ``value`` for ``hint``.

        With no loader of the app's own, a value that ``hint`` reads back
        unchanged travels as plain JSON (``_plain``); the rest keeps the
        extended serializer's tags.
        """
        if type(value) in _PRIMITIVES and self._coerce_plain:
            return value
        dumped = self._dump(value, hint)
        if self._coerce_plain:
            plain = readable(dumped, hint, self._coerce)
            if plain is not NOT_PLAIN:
                return plain
        if self._tag is not None:
            dumped = self._tag(dumped)
        return dumped

    def load(self, raw: Any, hint: Any) -> Any:  # noqa: ANN401
        """Return ``raw`` read as ``hint``; raise (``CoercionError``, ...) if it is not one."""
        value = self.untag(raw)
        value = self._load(value, hint)
        if self._coerce_plain:
            value = self._coerce(value, hint)
        return value

    def untag(self, raw: Any) -> Any:  # noqa: ANN401
        """Undo the extended serializer's tags, innermost first, as ``json`` does."""
        hook = self._untag_hook
        if hook is None or type(raw) in _PRIMITIVES:
            return raw
        return _untag(raw, hook)


def _untag(raw: Any, hook: UntagHook) -> Any:  # noqa: ANN401
    if isinstance(raw, dict):
        return hook({key: _untag(item, hook) for key, item in raw.items()})
    if isinstance(raw, list):
        return [_untag(item, hook) for item in raw]
    return raw


def tagged_classes(hints: Iterable[Any]) -> Iterator[type[Any]]:
    """Yield the classes the extended serializer must know to read ``hints``.

    Its tags name dataclasses, named tuples and enums by class name; Jobify
    registers dataclasses and named tuples of parameters only, so the bridge
    also registers enums and everything reachable from return annotations.
    """
    seen: set[Any] = set()
    stack = list(hints)
    while stack:
        hint = stack.pop()
        try:
            if hint in seen:
                continue
            seen.add(hint)
        except TypeError:  # unhashable annotation objects
            continue
        args = typing.get_args(hint)
        if args:
            stack.extend(args)
            origin = typing.get_origin(hint)
            if origin is not None:
                stack.append(origin)
            continue
        if not isinstance(hint, type):
            continue
        is_named_tuple = issubclass(hint, tuple) and hasattr(hint, "_fields")
        if dataclasses.is_dataclass(hint) or is_named_tuple:
            yield hint
            try:
                stack.extend(typing.get_type_hints(hint).values())
            except (NameError, TypeError):
                continue
        elif issubclass(hint, Enum):
            yield hint


def ensure_json(value: Any, where: str) -> None:  # noqa: ANN401
    """Raise ``TypeError`` naming ``where`` if ``value`` is not plain JSON."""
    if type(value) in _PRIMITIVES:
        return
    found = _not_json(value)
    if found is not None:
        path, problem = found
        raise TypeError(where + "".join(reversed(path)) + problem)


def _not_json(value: Any) -> tuple[list[str], str] | None:  # noqa: ANN401, PLR0911
    """Find the first part of ``value`` that is not plain JSON: its path, innermost first.

    The path is spelt out only for what is found: most values are plain.
    """
    if type(value) in _PRIMITIVES:
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _not_json(item)
            if found is not None:
                found[0].append(f"[{index}]")
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return [], f" has a key {key!r} that is not a string"
            found = _not_json(item)
            if found is not None:
                found[0].append(f"[{key!r}]")
                return found
        return None
    return [], (
        f" is a {type(value).__name__}, which cannot travel as JSON. "
        "Use a type the app's dumper turns into JSON, or convert it first."
    )


def _too_deep(where: str) -> TypeError:
    return TypeError(
        f"{where} is nested too deeply to travel as JSON (Python's recursion limit "
        "was reached); flatten it, or send a reference to the data instead"
    )


def wire_signature(signature: inspect.Signature, injected: frozenset[str]) -> inspect.Signature:
    """Return the signature a message must fit: the function's, less INJECT."""
    params = [p for name, p in signature.parameters.items() if name not in injected]
    return signature.replace(parameters=params)


def positional_names(wire: inspect.Signature) -> tuple[str, ...] | None:
    """Return the parameter names when every one is a plain positional one.

    Such a signature (no defaults, no ``*args``/``**kwargs``, no keyword-only
    parameter) is filled by exactly one positional value per name, which
    :func:`decode_call` checks without ``Signature.bind``. ``None`` otherwise.
    """
    names: list[str] = []
    for name, param in wire.parameters.items():
        if param.kind not in _POSITIONAL or param.default is not inspect.Parameter.empty:
            return None
        names.append(name)
    return tuple(names)


def encode_call(
    task_name: str,
    bound: inspect.BoundArguments,
    hints: Mapping[str, Any],
    codec: ValueCodec,
    injected: Iterable[str] = (),
) -> tuple[list[Any], dict[str, Any]]:
    """Turn a bound Jobify call into Celery ``args`` and ``kwargs``.

    Injected parameters never travel: a worker injects its own. (A builder
    taken from a running job's context has them bound already.)
    """
    params = bound.signature.parameters
    skip = frozenset(injected)
    encoded: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if name in skip:
            continue
        hint = hints.get(name, Any)
        kind = params[name].kind
        where = f"argument {name!r} of task {task_name!r}"
        item: Any
        try:
            if kind is _VAR_POSITIONAL:
                item = tuple(codec.dump(v, hint) for v in value)
            elif kind is _VAR_KEYWORD:
                item = {k: codec.dump(v, hint) for k, v in value.items()}
            else:
                item = codec.dump(value, hint)
            ensure_json(item, where)
        except RecursionError:
            raise _too_deep(where) from None
        encoded[name] = item
    wire = inspect.BoundArguments(bound.signature, encoded)
    return list(wire.args), wire.kwargs


def decode_call(  # noqa: PLR0913
    task_name: str,
    *,
    signature: inspect.Signature,
    wire: inspect.Signature,
    hints: Mapping[str, Any],
    codec: ValueCodec,
    args: tuple[Any, ...] | list[Any],
    kwargs: Mapping[str, Any],
    positional: tuple[str, ...] | None = None,
) -> inspect.BoundArguments:
    """Bind a message's arguments to the function and load each one.

    ``positional`` is ``positional_names(wire)``, worked out once per route:
    a call that gives those parameters one positional value each is bound
    without ``Signature.bind``.

    Raises ``ArgumentLoadError`` naming the task and the parameter when the
    arguments do not fit the signature or a value does not load.
    """
    arguments: Mapping[str, Any]
    if positional is not None and not kwargs and len(args) == len(positional):
        arguments = dict(zip(positional, args, strict=True))
    else:
        try:
            arguments = wire.bind(*args, **kwargs).arguments
        except TypeError as exc:
            msg = f"task {task_name!r}: arguments do not fit {task_name}{wire}: {exc}"
            raise ArgumentLoadError(msg) from None
    loaded: dict[str, Any] = {}
    params = wire.parameters
    for name, value in arguments.items():
        hint = hints.get(name, Any)
        kind = params[name].kind
        try:
            if kind is _VAR_POSITIONAL:
                loaded[name] = tuple(codec.load(v, hint) for v in value)
            elif kind is _VAR_KEYWORD:
                loaded[name] = {k: codec.load(v, hint) for k, v in value.items()}
            else:
                loaded[name] = codec.load(value, hint)
        except Exception as exc:  # noqa: BLE001 - whatever a loader raises, the value is bad
            reason = _describe(exc)
            msg = f"task {task_name!r} parameter {name!r}: cannot load the value: {reason}"
            raise ArgumentLoadError(msg) from None
    return inspect.BoundArguments(signature, loaded)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"unknown type tag {exc}"
    if isinstance(exc, RecursionError):
        return "the value is nested too deeply"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Envelope(NamedTuple):
    """What the ``jobify`` header carried, decoded (one per executed message)."""

    exec_at: datetime | None
    request_state: dict[str, Any]
    publish: str | None = None
    cron: CronTick | None = None
    #: What was wrong with the header, each part left out (the worker logs these).
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CronTick:
    """A cron run fired by beat: the cron's job id, run number and expression."""

    job_id: str
    run: int
    expression: str


def encode_header(
    *,
    exec_at: datetime,
    request_state: Mapping[str, Any],
    codec: ValueCodec,
    publish: str = "",
    cron: CronTick | None = None,
) -> str:
    """Build the ``jobify`` header for a publish: one compact JSON string.

    A string rather than a nested AMQP table: the AMQP client encodes tables
    field by field in Python, on every publish.
    """
    state: dict[str, Any] = {}
    for key, value in request_state.items():
        if key in RESERVED_STATE_KEYS:
            msg = (
                f"request_state[{key!r}] is reserved: in the worker it holds the "
                "Celery request. Store your value under another key."
            )
            raise TypeError(msg)
        where = f"request_state[{key!r}]"
        try:
            item = codec.dump(value, Any)
            ensure_json(item, where)
        except RecursionError:
            raise _too_deep(where) from None
        state[key] = item
    header: dict[str, Any] = {"v": WIRE_VERSION, "exec_at": exec_at.isoformat()}
    if state:
        header["request_state"] = state
    if publish:
        header["publish"] = publish
    if cron is not None:
        header["cron"] = {"job_id": cron.job_id, "run": cron.run, "expression": cron.expression}
    return json.dumps(header, separators=(",", ":"))


# Headers decode to plain dicts (from JSON, or from an AMQP table): the checks
# below use ``dict`` rather than the ``Mapping`` ABC, which is several times
# slower to test, and this runs for every message a worker executes.


def _header_fields(raw: Any) -> tuple[dict[str, Any] | None, str | None]:  # noqa: ANN401
    """Return the header's fields, or ``None`` and why it cannot be read."""
    if isinstance(raw, str):
        try:
            raw, end = _HEADER_DECODER.raw_decode(text := raw)
        except ValueError as exc:
            return None, f"the jobify header is not JSON ({exc}); it was ignored"
        if end != len(text):
            return None, "the jobify header has text after its JSON; it was ignored"
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        return None, f"the jobify header is a {kind}, not a JSON object; it was ignored"
    version = raw.get("v")
    if version != WIRE_VERSION:
        return None, (
            f"the jobify header has wire version {version!r}, this worker reads "
            f"{WIRE_VERSION}; it was ignored"
        )
    return raw, None


def publish_token(raw: Any) -> str | None:  # noqa: ANN401
    """Return the publish token a ``jobify`` header carries, if any."""
    fields, _ = _header_fields(raw)
    token = fields.get("publish") if fields is not None else None
    return token if isinstance(token, str) else None


def decode_header(raw: Any, codec: ValueCodec, tz: ZoneInfo) -> Envelope:  # noqa: ANN401
    """Read a ``jobify`` header; a missing one gives an empty envelope.

    A header that cannot be read, or parts of one, are left out, and
    ``Envelope.problems`` says what was left out and why (the worker logs it
    with the task id): the job still runs, as a plain Celery call would.
    """
    if raw is None:
        return Envelope(None, {})
    fields, problem = _header_fields(raw)
    if fields is None:
        return Envelope(None, {}, problems=(problem,) if problem else ())
    problems: list[str] = []
    exec_at = _header_time(fields.get("exec_at"), tz, problems)
    state = _header_state(fields.get("request_state"), codec, problems)
    publish = fields.get("publish")
    if publish is not None and type(publish) is not str:
        problems.append("its publish token is not a string; it was ignored")
        publish = None
    cron = None
    if "cron" in fields:
        cron = _cron_tick(fields["cron"])
        if cron is None:
            problems.append("its cron part is malformed; it was ignored")
    return Envelope(exec_at, state, publish, cron, tuple(problems))


def _header_time(raw: Any, tz: ZoneInfo, problems: list[str]) -> datetime | None:  # noqa: ANN401
    moment = parse_time(raw, tz)
    if moment is None and raw is not None:
        problems.append(
            f"its exec_at {raw!r:.60} is not an ISO 8601 time; the run is planned "
            "for when the worker got it"
        )
    return moment


def _header_state(raw: Any, codec: ValueCodec, problems: list[str]) -> dict[str, Any]:  # noqa: ANN401
    if raw is None:
        return {}
    if type(raw) is not dict:
        problems.append(
            f"its request_state is a {type(raw).__name__}, not an object; it was ignored"
        )
        return {}
    state: dict[str, Any] = {}
    reserved: list[str] = []
    for key, value in raw.items():
        if key in RESERVED_STATE_KEYS:
            reserved.append(key)
            continue
        try:
            state[key] = codec.untag(value)
        except Exception as exc:  # noqa: BLE001 - any bad value is reported, not raised
            problems.append(f"request_state[{key!r}] does not load ({_describe(exc)}); dropped")
    if reserved:
        problems.append(f"request_state keys {sorted(reserved)} are reserved; dropped")
    return state


def _cron_tick(raw: Any) -> CronTick | None:  # noqa: ANN401
    if not isinstance(raw, dict):
        return None
    job_id, run, expression = raw.get("job_id"), raw.get("run"), raw.get("expression")
    if isinstance(job_id, str) and isinstance(run, int) and isinstance(expression, str):
        return CronTick(job_id=job_id, run=run, expression=expression)
    return None


def parse_time(raw: Any, tz: ZoneInfo) -> datetime | None:  # noqa: ANN401
    """Read an ISO 8601 time (Celery's ETA or our header) in the app's tz."""
    if isinstance(raw, datetime):
        moment = raw
    elif isinstance(raw, str) and raw:
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(tz)

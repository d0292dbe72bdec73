"""The console's routes: login, overview, sagas, inbox, products, live updates.

Every state-changing action is a POST carrying the session's CSRF token (checked
before anything else), then checked for the scope the JSON API would demand; a
refused action renders a message and changes nothing.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.auth import Scope
from api.console.charts import bars
from api.console.live import LiveHub
from api.console.sessions import COOKIE, Session, Sessions
from api.container import Container
from application import audit, operations, orders, overview, sagas
from application.errors import ApplicationError, InvalidInput
from domain.errors import DomainError, InvalidCommand
from projections import queries
from sagaflow.settings import Environment as Env

HERE = Path(__file__).parent
IDENT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]{0,500}$")
DECISIONS = ("retry", "resolve", "skip")
STATUSES = (
    "running",
    "awaiting_shipment",
    "shipped",
    "delivered",
    "completed",
    "compensating",
    "compensated",
    "compensation_parked",
)
COMPENSATION_EVENTS = {
    "SagaCompensated",
    "CompensationParked",
    "CompensationRetried",
    "CompensationResolved",
    "CompensationSkipped",
    "CompensationEscalated",
    "StepParked",
}


@dataclass
class ConsoleState:
    """The console's per-process parts: sessions, templates and the live hub."""

    sessions: Sessions
    live: LiveHub
    templates: Environment
    secure_cookie: bool

    @classmethod
    def build(cls, container: Container) -> ConsoleState:
        """The console of one API process (built in the lifespan)."""
        env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.globals["bars"] = bars

        async def lags() -> dict[str, float]:
            measured = await container.backpressure.refresh(max_age_s=2.0)
            return {
                "relay": measured.relay_events,
                "projection": measured.projection_events,
                "temporal": measured.temporal_backlog,
            }

        settings = container.settings
        return cls(
            sessions=Sessions(container.keys, settings.console_session_ttl_s),
            live=LiveHub(container.store, lags),
            templates=env,
            secure_cookie=settings.environment is not Env.DEVELOPMENT,
        )


router = APIRouter(prefix="/console", include_in_schema=False)


def install_console(app: FastAPI) -> None:
    """Add the console's routes and static files to ``app``."""
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")


# --- plumbing ---------------------------------------------------------------------


def _state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


class _LoginNeeded(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


def _session(request: Request) -> Session:
    session, expired = _state(request).sessions.get(request.cookies.get(COOKIE))
    if session is None:
        raise _LoginNeeded("your session expired: log in again" if expired else "")
    return session


def _login_redirect(request: Request, message: str) -> Response:
    target = "/console/login?next=" + quote(request.url.path)
    if message:
        target += "&m=expired"
    return RedirectResponse(target, status_code=303)


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    session: Session | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """Render ``name``; with ``X-Console-Fragment`` only its ``live`` block (live refresh)."""
    template = _state(request).templates.get_template(name)
    context = {
        "session": session,
        "path": request.url.path,
        "temporal_ui": _container(request).settings.temporal_ui_url,
        "namespace": _container(request).settings.temporal_namespace,
        **context,
    }
    if request.headers.get("x-console-fragment") and "live" in template.blocks:
        html = "".join(template.blocks["live"](template.new_context(context)))
    else:
        html = template.render(context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


async def _acting(request: Request, scope: Scope) -> tuple[Session, dict[str, str]] | Response:
    """The session and form of a POST, or the response refusing it (CSRF, scope)."""
    try:
        session = _session(request)
    except _LoginNeeded as exc:
        return _login_redirect(request, exc.message)
    form = await _form(request)
    if not session.csrf_ok(form.get("csrf")):
        # Why before anything else: a forged cross-site POST must do nothing at all.
        return render(
            request,
            "error.html",
            {"title": "forbidden", "message": "missing or wrong CSRF token: nothing was done"},
            session=session,
            status_code=403,
        )
    if not session.allows(scope):
        return render(
            request,
            "error.html",
            {
                "title": "forbidden",
                "message": f"this key lacks the {scope.value!r} scope: nothing was done",
            },
            session=session,
            status_code=403,
        )
    return session, form


def _back(path: str, message: str, kind: str = "ok") -> RedirectResponse:
    return RedirectResponse(f"{path}?{kind}={quote(message[:300])}", status_code=303)


def _flash(request: Request) -> dict[str, str]:
    return {k: request.query_params[k][:300] for k in ("ok", "err") if k in request.query_params}


@router.get("/login")
async def login_page(request: Request) -> Response:
    """The login form (asks for an API key once)."""
    message = "your session expired: log in again" if request.query_params.get("m") else ""
    return render(
        request, "login.html", {"message": message, "next": _next(request.query_params.get("next"))}
    )


def _next(value: str | None) -> str:
    # Only paths inside the console: never an open redirect.
    if value and value.startswith("/console") and "//" not in value and "\\" not in value:
        return value
    return "/console"


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the key; on success a session cookie and a redirect to the page asked for."""
    form = await _form(request)
    found = _state(request).sessions.login(form.get("api_key", "").strip())
    if found is None:
        return render(
            request,
            "login.html",
            {"message": "unknown API key: check it and try again", "next": _next(form.get("next"))},
            status_code=401,
        )
    token, session = found
    response = RedirectResponse(_next(form.get("next")), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(session.expires_at - time.time()),
        httponly=True,
        samesite="strict",
        secure=_state(request).secure_cookie,
        path="/console",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session."""
    acting = await _acting(request, Scope.READ)
    if isinstance(acting, Response):
        return acting
    _state(request).sessions.logout(request.cookies.get(COOKIE))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/live")
async def live(request: Request) -> Response:
    """Server-sent events: one ``change`` frame per batch of new events."""
    try:
        _session(request)
    except _LoginNeeded:
        return Response(status_code=401)
    return StreamingResponse(
        _state(request).live.subscribe(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# --- pages --------------------------------------------------------------------------


@router.get("")
async def overview_page(request: Request) -> Response:
    """Throughput, outcomes, latency, lags, backlog and dead letters."""
    try:
        session = _session(request)
    except _LoginNeeded as exc:
        return _login_redirect(request, exc.message)
    container = _container(request)
    measured = await container.backpressure.refresh(max_age_s=2.0)
    lags = {
        "relay": float(measured.relay_events),
        "projection": float(measured.projection_events),
        "temporal": float(measured.temporal_backlog),
    }
    figures = await overview.overview(container.ctx, lags)
    history = list(_state(request).live.lag_history)
    return render(
        request,
        "overview.html",
        {
            "o": figures,
            "lag_series": {name: [sample[name] for _, sample in history] for name in lags},
        },
        session=session,
    )


def _filters(request: Request) -> tuple[dict[str, str], dict[str, str]]:
    values = {k: request.query_params.get(k, "").strip() for k in ("type", "status", "customer")}
    errors: dict[str, str] = {}
    known = _container(request).ctx.registry.names
    if values["type"] and values["type"] not in known:
        errors["type"] = "unknown saga type; known: " + ", ".join(known)
    if values["status"] and values["status"] not in STATUSES:
        errors["status"] = "unknown status"
    if values["customer"] and not IDENT.match(values["customer"]):
        errors["customer"] = "letters, digits, '.', '_' or '-' (at most 64)"
    return values, errors


@router.get("/sagas")
async def sagas_page(request: Request) -> Response:
    """The saga read model, filtered by type, status and customer."""
    try:
        session = _session(request)
    except _LoginNeeded as exc:
        return _login_redirect(request, exc.message)
    values, errors = _filters(request)
    page = {"items": [], "has_more": False}
    if not errors:
        page = await sagas.list_sagas(
            _container(request).ctx,
            saga_type=values["type"] or None,
            status=values["status"] or None,
            key=f"CustomerId:{values['customer']}" if values["customer"] else None,
            page_size=100,
        )
    return render(
        request,
        "sagas.html",
        {
            "filters": values,
            "errors": errors,
            "page": page,
            "types": _container(request).ctx.registry.names,
            "statuses": STATUSES,
        },
        session=session,
        status_code=422 if errors else 200,
    )


@router.get("/sagas/{saga_id}")
async def saga_page(request: Request, saga_id: str) -> Response:
    """One saga: timeline, current step, compensation log and plan, Temporal link."""
    try:
        session = _session(request)
    except _LoginNeeded as exc:
        return _login_redirect(request, exc.message)
    if not IDENT.match(saga_id):
        return _not_found(request, session, "saga", saga_id)
    ctx = _container(request).ctx
    row = await queries.get_saga_outcome(ctx.pool, saga_id)
    try:
        journal = await sagas.events(ctx, saga_id)
    except ApplicationError:
        journal = []
    if row is None and not journal:
        return _not_found(request, session, "saga", saga_id)
    order_events: list[dict[str, Any]] = []
    if row is not None and row.order_id:
        try:
            order_events = await orders.order_events(ctx, row.order_id)
        except ApplicationError:
            order_events = []
    timeline = sorted(journal + order_events, key=lambda e: e["global_position"])
    plan: dict[str, Any] | None = None
    # Why the plan only on a full page load: it is a Temporal query, and the live
    # refresh must never query Temporal per viewer per event.
    if not request.headers.get("x-console-fragment"):
        try:
            plan = await sagas.plan(ctx, saga_id)
        except Exception:
            plan = None
    summary = None
    if row is not None and row.order_id:
        raw, _ = await _maybe_summary(ctx, row.order_id)
        summary = raw
    return render(
        request,
        "saga.html",
        {
            "saga_id": saga_id,
            "row": row.model_dump(mode="json") if row else None,
            "timeline": timeline,
            "compensation_log": [e for e in journal if e["event_type"] in COMPENSATION_EVENTS],
            "plan": plan,
            "summary": summary,
            "flash": _flash(request),
        },
        session=session,
    )


async def _maybe_summary(ctx: Any, order_id: str) -> tuple[dict[str, Any] | None, bool]:
    import json

    try:
        text, reached = await orders.order_summary(ctx, order_id)
    except ApplicationError:
        return None, False
    return json.loads(text), reached


def _not_found(request: Request, session: Session, kind: str, ident: str) -> Response:
    return render(
        request,
        "error.html",
        {"title": "not found", "message": f"no {kind} with id {ident[:80]!r}"},
        session=session,
        status_code=404,
    )


@router.post("/sagas/{saga_id}/cancel")
async def cancel_saga(request: Request, saga_id: str) -> Response:
    """Cancel a saga (write scope): it compensates."""
    acting = await _acting(request, Scope.WRITE)
    if isinstance(acting, Response):
        return acting
    session, form = acting
    path = f"/console/sagas/{quote(saga_id)}"
    reason = form.get("reason", "").strip() or "cancelled from the console"
    if not IDENT.match(saga_id) or not PRINTABLE.match(reason):
        return _back(path, "invalid saga id or reason", "err")
    ctx = _container(request).ctx
    try:
        result = await sagas.cancel(ctx, saga_id, f"{reason} (by {session.principal})")
    except (ApplicationError, DomainError) as exc:
        await audit.record(ctx, session.principal, "cancel", saga_id, note=reason, result=str(exc))
        return _back(path, str(exc), "err")
    await audit.record(
        ctx, session.principal, "cancel", saga_id, note=reason, result=result["result"]
    )
    return _back(path, f"cancel: {result['result']}")


@router.post("/sagas/{saga_id}/decide")
async def decide(request: Request, saga_id: str) -> Response:
    """Retry, resolve or skip a parked step (admin scope), recorded with who and the note."""
    acting = await _acting(request, Scope.ADMIN)
    if isinstance(acting, Response):
        return acting
    session, form = acting
    back = _next(form.get("back")) if form.get("back") else "/console/inbox"
    decision, step, note = form.get("decision", ""), form.get("step", ""), form.get("note", "")
    problems = []
    if decision not in DECISIONS:
        problems.append("decision must be retry, resolve or skip")
    if not step or not PRINTABLE.match(step) or len(step) > 100:
        problems.append("step is missing or invalid")
    if not PRINTABLE.match(note):
        problems.append("the note may hold at most 500 printable characters")
    if decision in ("resolve", "skip") and not note.strip():
        problems.append(f"a note is required to {decision} (say what was done)")
    if not IDENT.match(saga_id):
        problems.append("invalid saga id")
    if problems:
        return _back(back, "; ".join(problems), "err")
    ctx = _container(request).ctx
    target = f"{saga_id}/{step}"
    try:
        result = await sagas.decide(
            ctx,
            saga_id,
            step,
            decision,  # type: ignore[arg-type]  # checked against DECISIONS above
            note=note,
            operator=session.principal,
        )
    except (ApplicationError, DomainError) as exc:
        await audit.record(ctx, session.principal, decision, target, note=note, result=str(exc))
        return _back(back, str(exc), "err")
    await audit.record(ctx, session.principal, decision, target, note=note, result=result["result"])
    return _back(back, f"{decision} {step} of {saga_id}: {result['result']}")


@router.get("/inbox")
async def inbox_page(request: Request) -> Response:
    """Parked steps and open dead letters, with the actions, and the audit trail."""
    try:
        session = _session(request)
    except _LoginNeeded as exc:
        return _login_redirect(request, exc.message)
    ctx = _container(request).ctx
    return render(
        request,
        "inbox.html",
        {
            "parked": await sagas.inbox(ctx, limit=200),
            "dead_letters": await operations.dead_letters(ctx, "open"),
            "actions": await audit.recent(ctx, 30),
            "flash": _flash(request),
        },
        session=session,
    )


@router.post("/dead-letters/{dead_letter_id}/{action}")
async def dead_letter_action(request: Request, dead_letter_id: str, action: str) -> Response:
    """Replay or skip a dead letter (admin scope), recorded with who did it."""
    acting = await _acting(request, Scope.ADMIN)
    if isinstance(acting, Response):
        return acting
    session, _ = acting
    if action not in ("replay", "skip") or not dead_letter_id.isdigit():
        return _back("/console/inbox", "unknown dead-letter action", "err")
    ctx = _container(request).ctx
    call = operations.replay_dead_letter if action == "replay" else operations.skip_dead_letter
    target = f"dead-letter {dead_letter_id}"
    try:
        resolution = await call(ctx, int(dead_letter_id))
    except ApplicationError as exc:
        await audit.record(ctx, session.principal, action, target, result=str(exc))
        return _back("/console/inbox", str(exc), "err")
    await audit.record(ctx, session.principal, action, target, result=resolution.status)
    released = asdict(resolution)["released"]
    return _back("/console/inbox", f"{action} {target}: {resolution.status}, released {released}")


@router.get("/products")
async def products_page(request: Request) -> Response:
    """Inventory per SKU (available / reserved / sold) and the test-order form."""
    try:
        session = _session(request)
    except _LoginNeeded as exc:
        return _login_redirect(request, exc.message)
    return await _products(request, session, {}, {}, 200)


async def _products(
    request: Request,
    session: Session,
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int,
) -> Response:
    ctx = _container(request).ctx
    levels = await queries.list_inventory_levels(ctx.pool, limit=500)
    return render(
        request,
        "products.html",
        {
            "levels": [lvl.model_dump(mode="json") for lvl in levels],
            "values": values,
            "errors": errors,
            "flash": _flash(request),
            "idempotency_key": "console-" + secrets.token_hex(16),
        },
        session=session,
        status_code=status_code,
    )


@router.post("/orders")
async def place_order(request: Request) -> Response:
    """Place a test order (write scope); invalid input is shown beside its field."""
    acting = await _acting(request, Scope.WRITE)
    if isinstance(acting, Response):
        return acting
    session, form = acting
    fields = ("customer_id", "sku", "quantity", "idempotency_key")
    values = {k: form.get(k, "").strip() for k in fields}
    errors: dict[str, str] = {}
    if not IDENT.match(values["customer_id"]):
        errors["customer_id"] = "required: letters, digits, '.', '_' or '-' (at most 64)"
    if not IDENT.match(values["sku"]):
        errors["sku"] = "required: letters, digits, '.', '_' or '-' (at most 64)"
    quantity = int(values["quantity"]) if values["quantity"].isdigit() else 0
    if not 1 <= quantity <= 10_000:
        errors["quantity"] = "a whole number from 1 to 10000"
    if values["idempotency_key"] and not IDENT.match(values["idempotency_key"]):
        errors["form"] = "the form's idempotency key is malformed: reload the page"
    ctx = _container(request).ctx
    if not errors:
        try:
            placed = await orders.place_order(
                ctx,
                values["customer_id"],
                [(values["sku"], quantity)],
                idempotency_key=values["idempotency_key"] or None,
                user_id=session.principal,
                admit=_container(request).backpressure.check,
            )
        except InvalidCommand as exc:
            for problem in exc.problems:
                field = "sku" if "sku" in problem.lower() or "unknown" in problem else "quantity"
                errors[field] = problem
        except InvalidInput as exc:
            errors.update({f: m for f, m in exc.problems})
        except (ApplicationError, DomainError) as exc:
            errors["form"] = str(exc)
        except Exception as exc:  # e.g. backpressure's 429: say it beside the form
            errors["form"] = getattr(exc, "detail", None) or str(exc)
        else:
            await audit.record(ctx, session.principal, "place order", placed.order_id)
            return RedirectResponse(f"/console/sagas/{placed.order_id}", status_code=303)
    return await _products(request, session, values, errors, 422)


__all__ = ["ConsoleState", "install_console", "router"]

"""FastAPI dependencies of the routes: the running service and one database session per request.

Routes declare them in their signatures (as in FastAPI's full-stack template, ``backend/app/api/deps.py``)::

    @router.get("/models/{ref}")
    def get_model(ref: str, service: ServiceDep, session: SessionDep) -> ModelOut: ...

Background work (the job queue and its workers, the predictors cache, start-up recovery) opens its own
sessions from ``service.factory``: a request's session serves that request only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from hamacho.serve.service import Service


def get_service(request: Request) -> Service:
    """FastAPI dependency: the running service (``app.state.service``)."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def get_session(service: ServiceDep) -> Iterator[Session]:
    """FastAPI dependency: a database session for one request, closed when the route function returns or raises.

    How transactions work: the service layer opens them, explicitly. Each of its functions that reads or
    writes does so inside ``with session.begin():``, which commits at the end of the block and rolls back
    when the block raises; what must happen together (a model row and its folder, image rows and their
    files, a job row and its queueing) happens in one such block, with the files removed when it fails.
    The session does not begin transactions by itself (``autobegin=False``): a query outside a ``begin()``
    block fails at once instead of holding a connection, so between two blocks (while a model loads, an
    upload is read or a request awaits) the request holds no connection and no transaction. Nothing is
    committed here; closing the session rolls back whatever a block left open (none should) and returns
    its connection to the pool.

    Sync routes run in FastAPI's threadpool and async ones on the event loop; either way the session is
    used by one request, one step at a time, and never after the route function has ended (the dependency's
    scope is ``"function"``: it closes before the response is sent, also when the route raises).
    """
    with service.factory(autobegin=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]

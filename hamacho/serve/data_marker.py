"""The data folder's identity: a marker file the API writes, which every worker checks against the database.

Replicas and workers on several machines share one database and one data folder (a network mount). A
worker that mounted another folder (a typo, a stale mount, a local empty folder) would train on images it
cannot find, or publish models nobody else can read: it refuses to start instead. The database holds the
folder's id (``service_info.data_id``); the folder holds the same id in :data:`MARKER`.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hamacho.errors import ConfigError
from hamacho.files import atomic_write_text
from hamacho.serve.db import ServiceInfo

MARKER = ".hamacho-data"
KEY = "data_id"


def _marker_id(data_dir: Path) -> str | None:
    try:
        return (data_dir / MARKER).read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {data_dir / MARKER}: {exc.strerror or exc}") from exc


def _database_id(factory: sessionmaker[Session]) -> str | None:
    with factory() as session:
        row = session.get(ServiceInfo, KEY)
        return row.value if row is not None else None


def _mismatch(data_dir: Path, found: str | None) -> ConfigError:
    what = "has no marker file" if found is None else "holds another service's marker"
    return ConfigError(f"the data folder {data_dir} {what} ({MARKER}): it is not the folder this database's "
                       "service uses; mount the same shared folder as the API (or start the API first)")


def adopt_data_folder(factory: sessionmaker[Session], data_dir: Path) -> str:
    """The API's side: bind the database and the data folder at first start, then check they still match.

    Replicas starting at once agree on one id (the database's primary key decides). A folder already marked
    (a database re-created over an existing folder) keeps its id. Once bound, a replica refuses a folder
    without the marker too (an empty local folder where the share failed to mount), rather than serve from it.

    Raises:
        ConfigError: The database names a data folder and this one is not it.
    """
    known = _database_id(factory)
    found = _marker_id(data_dir)
    if known is None:  # the database's first start: bind it to this folder
        try:
            with factory() as session, session.begin():
                candidate = found or uuid.uuid4().hex
                session.add(ServiceInfo(key=KEY, value=candidate))
                session.flush()  # the key is held from here: another replica's insert waits for our commit
                if found is None:  # the marker is written before the id is committed: a replica that sees
                    data_dir.mkdir(parents=True, exist_ok=True)  # the id finds the marker too
                    atomic_write_text(data_dir / MARKER, f"{candidate}\n")
        except IntegrityError:  # another replica bound it first (and wrote its marker before committing)
            pass
        known, found = _database_id(factory), _marker_id(data_dir)
    if found != known:  # a bound database and an unmarked folder: a share that is not mounted here
        raise _mismatch(data_dir, found)
    return known or ""


def check_data_folder(factory: sessionmaker[Session], data_dir: Path) -> str:
    """A worker's side: the folder must carry the marker of the database's data folder.

    Raises:
        ConfigError: No such folder, or its marker is missing or names another data folder.
    """
    if not data_dir.is_dir():
        raise ConfigError(f"the data folder {data_dir} does not exist: mount the same shared folder as the API")
    known, found = _database_id(factory), _marker_id(data_dir)
    if known is None:
        raise ConfigError("no service has used this database yet: start hamacho serve on it first, so that it "
                          f"marks its data folder ({MARKER})")
    if found != known:
        raise _mismatch(data_dir, found)
    return known

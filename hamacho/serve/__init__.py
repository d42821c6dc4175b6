"""``hamacho serve``: a REST API and a web UI over the library (docs/service.md).

Layers, lowest first: :mod:`.config` (settings of a running service), :mod:`.db` (SQLAlchemy tables and
the versioned schema), :mod:`.storage` (files under the data folder: uploads checked by decoding,
server-side paths inside allowed roots), :mod:`.worker` (one training job in a child process),
:mod:`.jobs` (the queue that starts and watches workers), :mod:`.predictors` (loaded models, least
recently used unloaded first), :mod:`.routes` (one router per resource) and :mod:`.app` (the FastAPI
application: auth, errors as ``{"error": ...}``, the static web UI).
"""

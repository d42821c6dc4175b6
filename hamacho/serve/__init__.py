"""``hamacho serve``: a REST API and a web UI over the library (docs/service.md).

Layers, lowest first: :mod:`.service_config` (settings of a running service), :mod:`.db` (SQLAlchemy tables
and the versioned schema), :mod:`.storage` (files under the data folder: uploads checked by decoding,
server-side paths inside allowed roots), :mod:`.schemas` (request and response bodies); :mod:`.worker` (one
training job in a child process), :mod:`.predictors` (loaded models, least recently used unloaded first),
:mod:`.model_files` (safe imports, zips); :mod:`.job_queue` (the queue that starts and watches workers);
:mod:`.service` (the state requests share, the service's refusals) and :mod:`.deps` (the routes'
dependencies: the service, one database session per request); what requests do, without HTTP:
:mod:`.image_catalog`, :mod:`.job_catalog`, :mod:`.model_catalog`, :mod:`.prediction_store`; :mod:`.routes`
(one router per resource: parse, call the layer below, answer) and :mod:`.app` (the FastAPI application:
auth, errors as ``{"error": ...}``, the static web UI); :mod:`.server` (checks, then uvicorn).
"""

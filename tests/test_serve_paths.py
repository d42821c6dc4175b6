"""Server-side paths and ``--allow-path`` roots are read one way: resolved (``..``, symlinks), then judged."""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from hamacho.errors import ConfigError
from hamacho.serve.app import create_app
from hamacho.serve.service_config import ServiceConfig
from tests.conftest import make_dataset
from tests.databases import service_database_url
from tests.serve_support import API


def error_of(response) -> str:
    body = response.json()
    assert set(body) - {"skipped"} == {"error"} and "\n" not in body["error"], body
    return body["error"]


@pytest.fixture
def places(tmp_path):
    """An allowed root holding line1/a.png, a folder beside it with b.png, and a link from the root to it."""
    images = make_dataset(tmp_path / "parts", n_train=2, n_good=0, n_defect=0) / "train" / "good"
    root, elsewhere = tmp_path / "import", tmp_path / "elsewhere"
    (root / "line1").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(images / "000.png", root / "line1" / "a.png")
    shutil.copy(images / "001.png", elsewhere / "b.png")
    os.symlink(elsewhere, root / "link")
    return tmp_path


def test_dotted_paths_inside_a_root_are_accepted_and_outside_refused(places, database_url):
    root = places / "import"
    # --allow-path takes a root written with '..' (ServiceConfig resolves it) ...
    config = ServiceConfig(data_dir=places / "data", database_url=service_database_url(database_url),
                           allowed_roots=[str(places / "data" / ".." / "import")])
    assert config.allowed_roots == [root.resolve()]
    accepted = [f"{root}/line1/../line1/a.png", f"{places}/elsewhere/../import/line1/a.png",
                f"{root}/link/../import/line1/./a.png"]  # link -> elsewhere, '..' of it is places
    refused = [f"{root}/../elsewhere/b.png", f"{root}/line1/../../elsewhere", f"{root}/link/b.png",
               f"{root}/.."]
    with TestClient(create_app(config, start_jobs=False)) as client:
        # ... and so do the paths clients send
        for number, path in enumerate(accepted):  # a tag each: a tag takes one file's content once
            response = client.post(f"{API}/images/paths",
                                   json={"paths": [path], "group": "good", "tag": f"dots{number}"})
            assert response.status_code == 201, (path, response.text)
            assert [item["name"] for item in response.json()["items"]] == ["a.png"]
        for path in refused:
            response = client.post(f"{API}/images/paths", json={"paths": [path], "group": "good"})
            assert response.status_code == 400, (path, response.text)
            assert error_of(response) == (f"{path}: outside the allowed folders ({root.resolve()}); "
                                          "see `hamacho serve --allow-path`")
        # whether a path exists is told inside the roots only
        missing = client.post(f"{API}/images/paths",
                              json={"paths": [f"{root}/line1/../nope.png"], "group": "good"})
        assert error_of(missing) == f"{root}/line1/../nope.png: no such file or folder on the server"
        assert "outside the allowed folders" in error_of(
            client.post(f"{API}/images/paths", json={"paths": [f"{root}/../nope.png"], "group": "good"}))
        # the other server-side paths take the same reading
        model = client.post(f"{API}/models/import-path",
                            json={"path": f"{root}/link/../elsewhere", "tag": "x"})
        assert model.status_code == 400 and "outside the allowed folders" in error_of(model)
        assert [client.get(f"{API}/images", params={"tag": f"dots{number}"}).json()["total"]
                for number in range(len(accepted))] == [1] * len(accepted)


@pytest.mark.parametrize("path", ["", "  ", "line1/a\x00.png"])
def test_a_path_that_is_not_one_is_refused_with_the_same_line_in_both_places(places, path, database_url):
    with pytest.raises(ConfigError) as refused_root:
        ServiceConfig(data_dir=places / "data", allowed_roots=[places / "import", path])
    message = str(refused_root.value)
    assert "is not a path (empty, or with a NUL character)" in message and "\n" not in message
    config = ServiceConfig(data_dir=places / "data", database_url=service_database_url(database_url),
                           allowed_roots=[places / "import"])
    with TestClient(create_app(config, start_jobs=False)) as client:
        response = client.post(f"{API}/images/paths", json={"paths": [path], "group": "good"})
        assert response.status_code == 400 and error_of(response) == message
        response = client.post(f"{API}/models/import-path", json={"path": path, "tag": "x"})
        assert response.status_code == 400 and error_of(response) == message

"""The staging endpoints inside the node daemon's real app, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import shutil
from types import SimpleNamespace

import openpyxl
from aiohttp.test_utils import TestClient, TestServer

from riversync.engine.schema import load_schema
from riversync.engine.store import LocalChange, Store
from riversync.node.daemon import NodeContext, build_app
from riversync.node.db import DbThread
from riversync.node.health import NodeMetrics, Thresholds
from riversync.protocol.keys import NodeEntry, Roster, User

DATA = os.path.join(os.path.dirname(__file__), "data")
TOKENS = {"nclerk": "tok-clerk", "nop": "tok-operator"}


def _roster():
    nodes = {n: NodeEntry(n, n, bytes([i]) * 32) for i, n in enumerate(("north", "south"), 1)}
    sha = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in TOKENS.items()}
    users = {"nclerk": User("nclerk", "north", "clerk", sha["nclerk"]),
             "nop": User("nop", "north", "operator", sha["nop"])}
    return Roster("c", nodes, users)


def run_with_node(tmp_path, scenario):
    cluster = tmp_path / "cluster"
    cluster.mkdir()
    shutil.copy(os.path.join(DATA, "staging_schema.toml"), cluster / "schema.toml")
    schema = load_schema(cluster / "schema.toml")
    roster = _roster()
    store = Store.open(str(tmp_path / "north.db"), schema, roster, "north", epoch=7)
    store.commit_local([LocalChange("create", "customers", "C-0999", {
        "name": "Live", "vat_number": "XX000000999"})], user="nop", now_ms=1_710_496_800_000)
    cfg = SimpleNamespace(node_id="north", office="north", roster=roster,
                          roster_path=cluster / "roster.toml",
                          staging_email_dir=tmp_path / "mail")
    db = DbThread()
    ctx = NodeContext(cfg=cfg, schema=schema, store=store, db=db, metrics=NodeMetrics(),
                      thresholds=Thresholds())

    async def main():
        client = TestClient(TestServer(build_app(ctx), host="127.0.0.1", port=0))
        await client.start_server()
        try:
            await scenario(client, ctx)
        finally:
            await client.close()

    try:
        asyncio.run(main())
    finally:
        db.shutdown()
        store.close()


def auth(who):
    return {"Authorization": f"Bearer {TOKENS[who]}"}


def b64(path):
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode()


def test_upload_review_apply_over_http(tmp_path):
    async def scenario(client, ctx):
        r = await client.post("/v1/staging/xlsx", headers=auth("nclerk"), json={
            "table": "customers", "file_name": "C28-apply-atomicity.xlsx",
            "content_b64": b64(os.path.join(DATA, "C28-apply-atomicity.xlsx"))})
        assert r.status == 201, await r.text()
        res = await r.json()
        bid = res["batch"]["id"]
        assert res["summary"]["valid"] == 3 and res["summary"]["invalid"] == 2
        assert ctx.store.count_rows("customers") == 1
        r = await client.get(f"/v1/staging/{bid}?status=invalid", headers=auth("nclerk"))
        shown = await r.json()
        assert [row["row"] for row in shown["rows"]] == [4, 5]
        r = await client.post(f"/v1/staging/{bid}/apply", headers=auth("nclerk"), json={})
        assert r.status == 403
        assert ctx.store.count_rows("customers") == 1
        r = await client.post(f"/v1/staging/{bid}/apply", headers=auth("nop"), json={})
        assert r.status == 200, await r.text()
        assert (await r.json())["batch"]["events"] == 3
        assert ctx.store.count_rows("customers") == 4
        r = await client.post(f"/v1/staging/{bid}/apply", headers=auth("nop"), json={})
        assert r.status == 409 and (await r.json())["error"]["code"] == "STAGING_BATCH_CLOSED"
        r = await client.get("/v1/staging", headers=auth("nclerk"))
        assert [b["state"] for b in (await r.json())["batches"]] == ["applied"]
        r = await client.get("/v1/staging/99", headers=auth("nclerk"))
        assert r.status == 404

    run_with_node(tmp_path, scenario)


def test_refused_upload_and_bad_requests_change_nothing(tmp_path):
    async def scenario(client, ctx):
        before = ctx.store.digests()
        for name, code in (("C27-legacy.xls", "XLSX_LEGACY"),
                           ("C27-encrypted.xlsx", "XLSX_ENCRYPTED")):
            r = await client.post("/v1/staging/xlsx", headers=auth("nclerk"), json={
                "table": "customers", "file_name": name, "content_b64": b64(
                    os.path.join(DATA, name))})
            assert r.status == 422
            assert (await r.json())["error"]["code"] == code
        r = await client.post("/v1/staging/xlsx", headers=auth("nclerk"),
                              json={"table": "customers", "content_b64": "***"})
        assert r.status == 400
        r = await client.post("/v1/staging/xlsx", headers=auth("nclerk"), json={
            "table": "nope", "content_b64": b64(os.path.join(DATA, "C25-phantom-rows.xlsx"))})
        assert r.status == 404
        r = await client.post("/v1/staging/xlsx", json={})
        assert r.status == 401
        r = await client.get("/v1/staging", headers=auth("nclerk"))
        assert (await r.json())["batches"] == []
        assert ctx.store.digests() == before

    run_with_node(tmp_path, scenario)


def test_email_ingest_and_export_over_http(tmp_path):
    async def scenario(client, ctx):
        mail = ctx.cfg.staging_email_dir
        mail.mkdir()
        shutil.copy(os.path.join(DATA, "C30-charset-mislabel.eml"), mail / "a.eml")
        r = await client.post("/v1/staging/email/ingest", headers=auth("nop"), json={})
        assert r.status == 200, await r.text()
        res = await r.json()
        assert len(res["staged"]) == 1 and (mail / "processed" / "a.eml").exists()
        bid = res["staged"][0]["batch"]
        r = await client.get(f"/v1/staging/{bid}", headers=auth("nclerk"))
        msg = (await r.json())["message"]
        assert "charset_mismatch" in msg["flags"]
        assert [p["text"] for p in msg["parts"]][0] == "Grüße aus Köln"
        r = await client.post("/v1/export/xlsx", headers=auth("nclerk"),
                              json={"scope": "office=north"})
        assert r.status == 200, await r.text()
        res = await r.json()
        wb = openpyxl.load_workbook(io.BytesIO(base64.b64decode(res["content_b64"])))
        assert "_riversync" in wb.sheetnames
        assert wb["customers"]["A2"].value == "C-0999"
        r = await client.post("/v1/export/xlsx", headers=auth("nclerk"), json={"scope": "x"})
        assert r.status == 400

    run_with_node(tmp_path, scenario)

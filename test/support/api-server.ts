// A real API server on 127.0.0.1 over a FakeCluster, for tests of sockets and real clients.
import type { ApiServer } from "../../src/api/server.ts";
import { startApiServer } from "../../src/api/server.ts";
import { staticModelRegistry } from "../../src/models/model-card.ts";
import { card, MODEL_ID, OTHER_MODEL_ID } from "./api-fixture.ts";
import { FakeCluster } from "./fake-cluster.ts";

export async function startTestServer(): Promise<{ server: ApiServer; cluster: FakeCluster }> {
  const cluster = new FakeCluster();
  cluster.addNode();
  cluster.addInstance(MODEL_ID);
  const server = await startApiServer({
    host: "127.0.0.1",
    port: 0,
    cluster,
    models: staticModelRegistry([card(MODEL_ID), card(OTHER_MODEL_ID)]),
    keepAliveMs: 50,
    placementTimeoutMs: 100,
    closeGraceMs: 500,
  });
  return { server, cluster };
}

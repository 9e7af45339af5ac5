// What a TypeScript agent writes against Airlock, type-checked (tsc --noEmit, strict) against
// the types openapi-typescript generates from openapi/openapi.json. Nothing here runs: the
// point is that the spec gives a TypeScript caller precise types. Each `@ts-expect-error`
// asserts that the spec rejects a mistake; if the spec stopped rejecting it, tsc fails with
// "Unused '@ts-expect-error' directive".
//
// Operations are addressed by path and method, as openapi-fetch does, so this file does not
// depend on operationIds.

import createClient from "openapi-fetch";
import type { components, paths } from "./airlock";

type Schemas = components["schemas"];
type Problem = Schemas["ProblemBody"];
type QueryResponse = Schemas["QueryResponse"];
type Held = Schemas["HeldView"];

/** The JSON client: results as application/json, errors as application/problem+json (the
 *  NDJSON stream that the query endpoint also offers is read line by line, not typed here). */
type Json = "application/json" | "application/problem+json";

export function connect(baseUrl: string, token: string) {
  return createClient<paths, Json>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
}

type Client = ReturnType<typeof connect>;

/** The query endpoint's 200 is JSON, or an NDJSON stream (text) on request. */
type QueryOk = paths["/v1/connections/{name}/query"]["post"]["responses"][200]["content"];
export const ndjsonIsText: QueryOk["application/x-ndjson"] = '{"type":"header"}\n';

/** Problem codes are a closed set on the wire: `code` is one of them (snake_case). */
export function isPolicyDenial(p: Problem): boolean {
  const denied: Schemas["Code"] = "policy_denied";
  return p.status === 403 && p.code === denied && typeof p.rule === "string";
}

export async function connectionNames(client: Client): Promise<string[]> {
  const { data, error } = await client.GET("/v1/connections");
  if (error) throw new Error(`${error.code}: ${error.detail}`);
  return data.connections.map((c) => `${c.name} (${c.kind}${c.read_only ? ", read-only" : ""})`);
}

export async function tables(client: Client, name: string): Promise<string[]> {
  const { data, error } = await client.GET("/v1/connections/{name}/schema", {
    params: { path: { name } },
  });
  if (error) throw new Error(error.detail);
  return data.tables.map((t) => `${t.name}: ${t.columns.map((c) => c.name).join(", ")}`);
}

/** A query is answered with rows (200), a hold for review (202), or a problem. */
export type Outcome =
  | { kind: "rows"; result: QueryResponse }
  | { kind: "held"; held: Held }
  | { kind: "problem"; problem: Problem };

export async function query(client: Client, sql: string, wait?: number): Promise<Outcome> {
  const { data, error, response } = await client.POST("/v1/connections/{name}/query", {
    params: { path: { name: "demo" }, query: wait === undefined ? {} : { wait } },
    body: { sql, params: [], max_rows: 100 },
  });
  if (error) return { kind: "problem", problem: error };
  if (response.status === 202 && "review_id" in data) return { kind: "held", held: data };
  if ("rows" in data) return { kind: "rows", result: data };
  throw new Error(`unexpected ${response.status}`);
}

export function firstColumn(result: QueryResponse): unknown[] {
  const rows: unknown[][] = result.rows;
  return rows.map((r) => r[0]);
}

export async function approve(human: Client, reviewId: string): Promise<string> {
  const { data, error } = await human.POST("/v1/reviews/{id}/approve", {
    params: { path: { id: reviewId } },
    body: { max_affected_rows: 1 },
  });
  if (error) throw new Error(error.detail);
  return data.status;
}

export async function runApproved(agent: Client, executionId: string): Promise<number | null> {
  const view = await agent.GET("/v1/executions/{id}", { params: { path: { id: executionId } } });
  if (view.error) throw new Error(view.error.detail);
  const next: string = view.data.next;
  void next;
  const { data, error } = await agent.POST("/v1/executions/{id}/run", {
    params: { path: { id: executionId } },
  });
  if (error) throw new Error(`${error.code}: ${error.detail}`);
  // The result is what the held request would have answered: rows for a query.
  if (!("rows" in data)) throw new Error("a held query answered with a command's output");
  const result: QueryResponse = data;
  return result.affected_rows ?? null;
}

export async function auditTrail(auditor: Client, executionId: string): Promise<string[]> {
  const { data, error } = await auditor.GET("/v1/audit", {
    params: { query: { execution_id: executionId, limit: 10 } },
  });
  if (error) throw new Error(error.detail);
  return data.events.map((e) => `${e.execution_id} ${e.outcome}`);
}

// The spec's constraints, as a caller meets them.
export async function mistakes(client: Client): Promise<void> {
  // @ts-expect-error `sql` is required
  await client.POST("/v1/connections/{name}/query", { params: { path: { name: "demo" } }, body: {} });
  // @ts-expect-error a query has no `statement` field
  const extra: Schemas["QueryRequest"] = { sql: "SELECT 1", statement: "SELECT 1" };
  void extra;
  // @ts-expect-error `max_rows` is a number
  const rows: Schemas["QueryRequest"] = { sql: "SELECT 1", max_rows: "10" };
  void rows;
  // @ts-expect-error the connection name is a required path parameter
  await client.POST("/v1/connections/{name}/query", { body: { sql: "SELECT 1" } });
  // @ts-expect-error there is no such endpoint
  await client.GET("/v1/tables");
  // @ts-expect-error `wait` is a number of seconds
  await client.POST("/v1/connections/{name}/query", { params: { path: { name: "demo" }, query: { wait: "soon" } }, body: { sql: "SELECT 1" } });
  // @ts-expect-error a problem's code is one of the documented codes
  const bogus: Schemas["Code"] = "no_such_problem";
  void bogus;
}

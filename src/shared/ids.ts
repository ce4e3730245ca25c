// Branded ids. Every id in skein is minted here and only here, so an id of one kind can never be
// passed where another is expected, and no magic string (exo's "CANCEL_ALL_TASKS") can pose as one.
import { randomUUID } from "node:crypto";
import { z } from "zod";

declare const brand: unique symbol;
export type Brand<T, B extends string> = T & { readonly [brand]: B };

export type NodeId = Brand<string, "NodeId">;
export type TaskId = Brand<string, "TaskId">;
export type CommandId = Brand<string, "CommandId">;
export type InstanceId = Brand<string, "InstanceId">;
export type RunnerId = Brand<string, "RunnerId">;
export type ModelId = Brand<string, "ModelId">;

/** Ids arrive from the network: bound their length and charset before they reach any map. */
export const ID_LENGTH_MAX = 128;
const idString = z.string().min(1).max(ID_LENGTH_MAX).regex(/^[A-Za-z0-9._:\/-]+$/, "id has characters outside [A-Za-z0-9._:/-]");

export const NodeIdSchema = idString.transform((s) => s as NodeId);
export const TaskIdSchema = idString.transform((s) => s as TaskId);
export const CommandIdSchema = idString.transform((s) => s as CommandId);
export const InstanceIdSchema = idString.transform((s) => s as InstanceId);
export const RunnerIdSchema = idString.transform((s) => s as RunnerId);
export const ModelIdSchema = idString.transform((s) => s as ModelId);

export const newNodeId = (): NodeId => `node-${randomUUID()}` as NodeId;
export const newTaskId = (): TaskId => `task-${randomUUID()}` as TaskId;
/** The completion id a client sees is the command id, so OpenAI-style prefixes are kept. */
export const newCommandId = (): CommandId => `chatcmpl-${randomUUID()}` as CommandId;
export const newInstanceId = (): InstanceId => `inst-${randomUUID()}` as InstanceId;
export const newRunnerId = (): RunnerId => `runner-${randomUUID()}` as RunnerId;

/** Parse an id that came from outside (URL path, JSON body). Returns null when it is malformed. */
export function parseCommandId(raw: string): CommandId | null {
  const r = CommandIdSchema.safeParse(raw);
  return r.success ? r.data : null;
}
export function parseInstanceId(raw: string): InstanceId | null {
  const r = InstanceIdSchema.safeParse(raw);
  return r.success ? r.data : null;
}
export function asModelId(raw: string): ModelId {
  return ModelIdSchema.parse(raw);
}

// One answer as the client sees it: generated text split into text and tool calls (with the ids
// the API hands out), and the checks an answer must pass when it ends. Every adapter streams and
// collects through this, so a call looks the same in all four APIs.
import type { ToolChoice } from "../shared/types.ts";
import type { ApiError } from "./errors.ts";
import type { OutputParser } from "./tool-call-parser.ts";
import { outputParserFor } from "./tool-call-parser.ts";
import type { TaskEnd } from "./task-stream.ts";
import { callRequired, jsonAnswerInvalid, newToolCallId, toolCallMissing } from "./tools.ts";

export interface AnswerToolCall {
  readonly id: string;
  readonly name: string;
  /** JSON text of the arguments object, exactly as the deltas added up. */
  readonly arguments: string;
}

export type AnswerPiece =
  | { readonly type: "text"; readonly text: string }
  | { readonly type: "callStart"; readonly index: number; readonly id: string; readonly name: string }
  | { readonly type: "callArguments"; readonly index: number; readonly id: string; readonly delta: string }
  | { readonly type: "callEnd"; readonly index: number; readonly call: AnswerToolCall };

export interface AnswerRules {
  /** Tools were offered: parse calls out of the text. */
  readonly toolsOffered: boolean;
  readonly toolChoice?: ToolChoice | undefined;
  /** response_format asked for JSON. */
  readonly json: boolean;
  /** The JSON schema the answer is checked against (absent or null: any JSON). */
  readonly jsonSchema?: unknown;
  /** Prefix of call ids: "call_" (OpenAI chat), "toolu_" (Anthropic), "fc_" (Responses). */
  readonly callIdPrefix: string;
}

export class AnswerAssembler {
  private readonly parser: OutputParser;
  private readonly ids: string[] = [];
  private readonly done: AnswerToolCall[] = [];
  private shownText = "";

  constructor(readonly rules: AnswerRules) {
    this.parser = outputParserFor(rules.toolsOffered);
  }

  get calls(): readonly AnswerToolCall[] {
    return this.done;
  }

  get text(): string {
    return this.shownText;
  }

  push(text: string): AnswerPiece[] {
    return this.translate(this.parser.push(text));
  }

  end(): AnswerPiece[] {
    return this.translate(this.parser.end());
  }

  /** After end(): the error the answer is, if it breaks the request's rules (a cut-off answer is let through). */
  violation(end: TaskEnd): ApiError | null {
    if (end.status !== "Complete") return null;
    if (callRequired(this.rules.toolChoice) && this.done.length === 0) return toolCallMissing();
    if (this.rules.json && this.done.length === 0 && end.finishReason !== "length") return jsonAnswerInvalid(this.shownText, this.rules.jsonSchema ?? null);
    return null;
  }

  private translate(pieces: ReturnType<OutputParser["push"]>): AnswerPiece[] {
    const out: AnswerPiece[] = [];
    for (const piece of pieces) {
      switch (piece.type) {
        case "text":
          this.shownText += piece.text;
          out.push(piece);
          break;
        case "toolCallStart": {
          const id = newToolCallId(this.rules.callIdPrefix);
          this.ids[piece.index] = id;
          out.push({ type: "callStart", index: piece.index, id, name: piece.name });
          break;
        }
        case "toolCallArguments":
          out.push({ type: "callArguments", index: piece.index, id: this.ids[piece.index] ?? "", delta: piece.delta });
          break;
        case "toolCallEnd": {
          const call: AnswerToolCall = { id: this.ids[piece.index] ?? "", name: piece.name, arguments: piece.arguments };
          this.done.push(call);
          out.push({ type: "callEnd", index: piece.index, call });
          break;
        }
      }
    }
    return out;
  }
}

/** A whole (non-streamed) answer: text, calls, and the rule it breaks, if any. */
export function assembleWhole(text: string, rules: AnswerRules, end: TaskEnd): { text: string; calls: readonly AnswerToolCall[]; violation: ApiError | null } {
  const assembler = new AnswerAssembler(rules);
  assembler.push(text);
  assembler.end();
  return { text: assembler.text, calls: assembler.calls, violation: assembler.violation(end) };
}

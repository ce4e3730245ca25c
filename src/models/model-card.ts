// A model the node can serve. The models issue grows this into a catalogue with downloads; the
// core only needs enough to place and load an instance.
import type { ModelId } from "../shared/ids.ts";
import type { ModelPlacementInfo } from "../shared/types.ts";

export interface ModelCard {
  readonly modelId: ModelId;
  readonly name: string;
  readonly layerCount: number;
  readonly sizeBytes: number;
  /**
   * Of sizeBytes, what only a pipeline's last stage holds (output head and final norm), from the
   * GGUF's tensor table when the file is here; absent: unknown, placement spreads it over the layers.
   */
  readonly headBytes?: number;
  readonly contextLength: number;
  /** Local GGUF path when the file is on this node; null when it still has to be downloaded. */
  readonly path: string | null;
  /** Module whose createEngine() serves this model; null = the built-in GGUF engine. */
  readonly engineModule: string | null;
  readonly engineOptions: Readonly<Record<string, unknown>>;
}

export interface ModelRegistry {
  /** Models this node can serve now, the default first. */
  list(): readonly ModelCard[];
  get(modelId: string): ModelCard | undefined;
}

/** What placement needs of a card. */
export function placementInfoOfCard(card: ModelCard): ModelPlacementInfo {
  return { modelId: card.modelId, layerCount: card.layerCount, sizeBytes: card.sizeBytes, ...(card.headBytes === undefined ? {} : { headBytes: card.headBytes }) };
}

/** A registry over a fixed list of cards (the bundled model, cards given by tests). */
export function staticModelRegistry(cards: readonly ModelCard[]): ModelRegistry {
  const byId = new Map(cards.map((c) => [c.modelId as string, c]));
  return { list: () => cards, get: (id) => byId.get(id) };
}

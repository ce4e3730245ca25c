// A stable colour per node, so the same machine has the same colour in every view.
const COLORS = ["#4f6bed", "#15a37a", "#e0883a", "#c04fd8", "#d94c66", "#2c9fcf", "#8a9a2c", "#7a5cff"];

export function nodeColor(nodeId: string, allNodeIds: readonly string[]): string {
  const sorted = [...allNodeIds].sort();
  const index = sorted.indexOf(nodeId);
  return COLORS[(index < 0 ? 0 : index) % COLORS.length]!;
}

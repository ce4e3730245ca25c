// The dashboard is a separate static app: built into dist/dashboard and served by the node's API at /.
import path from "node:path";
import { svelte } from "@sveltejs/vite-plugin-svelte";
import { defineConfig } from "vite";

const dashboardRoot = import.meta.dirname;

export default defineConfig({
  root: dashboardRoot,
  // Relative asset URLs, so the files work behind a path prefix too.
  base: "./",
  plugins: [svelte()],
  build: {
    outDir: path.join(dashboardRoot, "..", "dist", "dashboard"),
    emptyOutDir: true,
    // Served from the LAN, never a CDN: one small bundle, hashed names for long caching.
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
  server: {
    proxy: {
      // `vite dev` against a running node (SKEIN_URL, default the product's port).
      "^/(v1|state|events|instance|models|node_id)": process.env["SKEIN_URL"] ?? "http://127.0.0.1:52415",
    },
  },
});

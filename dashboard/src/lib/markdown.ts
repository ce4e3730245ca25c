// Model output is untrusted: Markdown is rendered by marked and then sanitized by DOMPurify, so no
// tag, attribute or URL from a model can run script in the dashboard (the page's CSP is a second
// wall). Code blocks get a header with the language and a copy control.
import DOMPurify from "dompurify";
import { Marked } from "marked";

const LANGUAGE_CHARS_MAX = 24;

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

const marked = new Marked({
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    code({ text, lang }) {
      const language = (lang ?? "").trim().split(/\s+/)[0]?.slice(0, LANGUAGE_CHARS_MAX) ?? "";
      const label = language === "" ? "code" : language;
      // A span with role=button, not a <button>: buttons from model output are forbidden below, and
      // the one click handler (in MessageView) only copies the block's own text.
      return `<div class="code-block"><div class="code-head"><span>${escapeHtml(label)}</span><span class="copy-code" role="button" tabindex="0">Copy</span></div><pre><code>${escapeHtml(text)}</code></pre></div>`;
    },
  },
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  // Links open outside the app and never get the opener.
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

export function renderMarkdown(source: string): string {
  const html = marked.parse(source) as string;
  return DOMPurify.sanitize(html, {
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed", "img", "svg", "math"],
    FORBID_ATTR: ["style"],
  });
}

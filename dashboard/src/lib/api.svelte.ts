// Every request of the dashboard goes through here, so a node started with an API key works: the
// key (asked for once, kept in localStorage) rides in the Authorization header, or in ?key= for
// EventSource, which cannot set headers. A 401 asks the user for the key.

const KEY_STORAGE = "skein.apiKey.v1";

class Auth {
  key = $state<string | null>(localStorage.getItem(KEY_STORAGE));
  /** A request was refused for want of a (valid) key. */
  needed = $state(false);

  save(key: string): void {
    const trimmed = key.trim();
    if (trimmed === "") localStorage.removeItem(KEY_STORAGE);
    else localStorage.setItem(KEY_STORAGE, trimmed);
    // Every open stream and cached list was made without the key: start over.
    location.reload();
  }
}

export const auth = new Auth();

export async function apiFetch(url: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (auth.key !== null) headers.set("authorization", `Bearer ${auth.key}`);
  const response = await fetch(url, { ...init, headers });
  if (response.status === 401) auth.needed = true;
  return response;
}

export function withKey(url: string): string {
  if (auth.key === null) return url;
  return `${url}${url.includes("?") ? "&" : "?"}key=${encodeURIComponent(auth.key)}`;
}

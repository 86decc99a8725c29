// HTTP calls to the tracker's API with the viewer token; errors carry the server's own sentence.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function createApi(token) {
  async function get(path, params = {}) {
    const url = new URL(path, window.location.origin);
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) url.searchParams.set(k, v);
    return answer(await fetch(url, { headers: { Authorization: `Bearer ${token}` } }));
  }
  async function post(path, body) {
    const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
    return answer(await fetch(new URL(path, window.location.origin), { method: "POST", headers, body: JSON.stringify(body) }));
  }
  async function answer(response) {
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        message = (await response.json()).error || message;
      } catch {
        // not JSON: keep the status line
      }
      throw new ApiError(response.status, message);
    }
    return response.json();
  }
  return { get, post };
}

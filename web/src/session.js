// The viewer token: taken from ?token= (then removed from the address bar, so it does not linger in history
// or get shared with a screenshot of the URL) or from the sign-in form, and kept in localStorage. Signing in
// asks `/api/me` until a token is accepted, through a server that is not up yet.
import { ApiError, createApi } from "./api.js";

const KEY = "tracker.token";
const RETRY_MS = 3000; // the server cannot be reached: ask again this often

/** The token to use, or null when the user must sign in. */
export function currentToken() {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    localStorage.setItem(KEY, fromUrl.trim());
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return localStorage.getItem(KEY);
}

export function forgetToken() {
  localStorage.removeItem(KEY);
}

/** Shows the sign-in form; resolves with the token the user typed (already stored). */
export function askForToken(message = "") {
  const form = document.getElementById("signin");
  const input = document.getElementById("signin-token");
  document.getElementById("signin-error").textContent = message;
  document.getElementById("app").hidden = true;
  form.hidden = false;
  document.body.dataset.state = "signin";
  input.focus();
  return new Promise((resolve) => {
    form.addEventListener(
      "submit",
      (event) => {
        event.preventDefault();
        const token = input.value.trim();
        localStorage.setItem(KEY, token);
        form.hidden = true;
        resolve(token);
      },
      { once: true },
    );
  });
}

/** Signs in until a token is accepted; returns it with `/api/me` (name and granted fleets). */
export async function signIn() {
  let token = currentToken() || (await askForToken());
  for (;;) {
    try {
      return { token, me: await createApi(token).get("/api/me") };
    } catch (err) {
      if (!(err instanceof ApiError) || err.status >= 500) {
        document.getElementById("signin-error").textContent =
          `The server cannot be reached (${err.message}); retrying…`;
        await new Promise((r) => setTimeout(r, RETRY_MS));
        continue;
      }
      forgetToken();
      token = await askForToken(err.status === 401 ? "That token was not accepted." : err.message);
    }
  }
}

/** The server refused the token mid-session: sign in again, then start over with the new one. */
export function signInAgain() {
  forgetToken();
  askForToken("The server no longer accepts this token.").then(() => window.location.reload());
}

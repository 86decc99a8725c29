// The viewer token: taken from ?token= (then removed from the address bar, so it does not linger in history
// or get shared with a screenshot of the URL) or from the sign-in form, and kept in localStorage.
const KEY = "tracker.token";

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

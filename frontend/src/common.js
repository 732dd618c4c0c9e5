// Shared by the viewer pages: the token lives in sessionStorage["medcloud.token"], as on the hub's
// other pages; without one the page shows a sign-in box and loads nothing.
export const TOKEN_KEY = "medcloud.token";

export const $ = (id) => document.getElementById(id);

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export class HttpError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

/** fetch with the bearer token; problem+json errors become HttpError with the server's detail. */
export async function api(url, accept = "application/json") {
  const r = await fetch(url, { headers: { Authorization: `Bearer ${token()}`, Accept: accept } });
  if (!r.ok) {
    let detail = "";
    try {
      const body = await r.json();
      detail = body.detail || body.title || "";
    } catch {
      /* not JSON */
    }
    throw new HttpError(r.status, detail);
  }
  if (r.status === 204) return [];
  return r.json();
}

export function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = false;
  document.body.dataset.error = "yes";
}

/** Wires the sign-in form and sign-out button; resolves true when there is a token to try. */
export function setUpSignIn() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    location.reload();
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  if (!token()) {
    askForToken();
    return false;
  }
  $("signout").hidden = false;
  return true;
}

/** Shows the sign-in box (no token, or a token the hub refused) and hides any data. */
export function askForToken(message) {
  $("workspace").hidden = true;
  $("signin").hidden = false;
  document.body.dataset.signedIn = "no";
  if (message) showError(message);
  $("token").focus();
}

/** Turns an error into what the user sees: a refused token sends them back to sign in. */
export function reportFailure(err) {
  console.warn(err);
  if (err instanceof HttpError && err.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken("The hub refused this token (expired or unknown). Sign in again. / トークンが拒否されました。");
  } else if (err instanceof HttpError && err.status === 403) {
    showError(`Not allowed: ${err.message} / 権限がありません`);
  } else if (err instanceof HttpError && err.status === 404) {
    showError(`Not found: ${err.message} / 見つかりません`);
  } else {
    showError(`Could not load: ${err.message || err}`);
  }
  document.body.dataset.ready = "failed";
}

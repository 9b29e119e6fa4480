// Logs in with an ops token: from a #token= link (which never reaches a server log) or
// the form; the server keeps it in an HttpOnly cookie and the page goes to the map.
async function login(token) {
  const r = await fetch("/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token }),
  });
  if (r.ok) { location.replace("/"); return; }
  let why = `${r.status}`;
  try { why = (await r.json()).message || why; } catch (e) { /* not JSON */ }
  document.getElementById("login-error").textContent = why;
}

const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromLink) {
  history.replaceState(null, "", location.pathname);  // the token leaves the address bar
  login(fromLink);
}
document.getElementById("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  login(document.getElementById("token").value.trim());
});

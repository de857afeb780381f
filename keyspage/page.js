for (const b of document.querySelectorAll("[data-copy]")) {
  const t = document.getElementById(b.dataset.copy);
  b.hidden = false;
  b.onclick = () => { t.select(); navigator.clipboard?.writeText(t.value).then(() => { b.textContent = "Copied"; }); };
}
if (document.querySelector("[data-once]")) history.replaceState(null, "", "./");

// The only script of the registry page: "copy" buttons next to the command lines.
// Everything else is plain links and forms, so the pages work with scripts off.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const code = button.closest("tr").querySelector("code");
  navigator.clipboard.writeText(code.textContent).then(
    () => { button.textContent = "copied"; },
    () => { button.textContent = "select and copy"; },
  );
});

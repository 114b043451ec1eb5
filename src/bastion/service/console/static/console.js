// Bastion console: the little behaviour htmx does not give. No inline script anywhere (CSP script-src 'self').
"use strict";
document.addEventListener("submit", function (event) {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm) {
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  }
}, true);
document.addEventListener("click", function (event) {
  const button = event.target instanceof Element ? event.target.closest("[data-copy-from]") : null;
  if (button) {
    const source = document.getElementById(button.getAttribute("data-copy-from"));
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent.trim());
      button.textContent = "copied";
    }
  }
});

// Saves the preferences form without a reload, through the GraphQL API with the page's contact
// token. Without this script the form posts and the server redirects back: the same result.
"use strict";
(function () {
  const form = document.getElementById("preferences");
  const status = document.getElementById("status");
  if (!form || !window.fetch) return;
  const mutation = "mutation($input: SavePreferencesInput!) { savePreferences(input: $input) }";
  let saving = false;
  form.addEventListener("submit", async function (event) {
    const action = event.submitter && event.submitter.value;
    if (action !== "save") return; // "Unsubscribe from everything" posts the form as it is.
    event.preventDefault();
    if (saving) return;
    const data = new FormData(form);
    const input = { subscribed: [], frequencies: [], granted: [], fields: [] };
    for (const [name, value] of data.entries()) {
      if (name === "topic") input.subscribed.push(value);
      else if (name === "consent") {
        const at = value.lastIndexOf(".");
        input.granted.push({ purpose: value.slice(0, at), channel: value.slice(at + 1).toUpperCase() });
      } else if (name.startsWith("frequency.")) input.frequencies.push({ topic: name.slice(10), frequency: value.toUpperCase() });
      else if (name.startsWith("field.")) input.fields.push({ key: name.slice(6), value: value });
      else if (name === "language") input.language = value;
    }
    // Unticked checkbox fields are not in FormData; the server reads a missing one as unticked.
    // Marked busy rather than disabled: disabling the focused button would drop keyboard focus
    // to the start of the page.
    const button = event.submitter;
    saving = true;
    button.setAttribute("aria-disabled", "true");
    try {
      const response = await fetch("/graphql", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + form.dataset.token },
        body: JSON.stringify({ query: mutation, variables: { input: input } }),
      });
      const body = await response.json();
      if (body.errors) {
        // The server's page says what was wrong, in the reader's language.
        form.submit();
        return;
      }
      status.innerHTML = "";
      const notice = document.createElement("p");
      notice.className = "notice";
      notice.textContent = form.dataset.saved;
      status.appendChild(notice);
      // The notice is at the top, where the page without script shows it too; on a small
      // screen that is far above Save. Focus stays on Save.
      const box = status.getBoundingClientRect();
      if (box.top < 0 || box.bottom > window.innerHeight) status.scrollIntoView({ block: "nearest" });
    } catch (error) {
      form.submit();
    } finally {
      saving = false;
      button.removeAttribute("aria-disabled");
    }
  });
})();

// Ask: send the form, read the answer as it streams (server-sent events in OpenAI's text-completion
// chunk shape), then turn [n] markers into links to the cited chunks and show the rating form.
(function () {
  const form = document.getElementById("ask-form");
  const answer = document.getElementById("answer");
  const meta = document.getElementById("answer-meta");
  const rate = document.getElementById("rate");
  const rateForm = document.getElementById("rate-form");
  if (!form || !document.getElementById("ask-submit")) return;

  function linkCitations(text, citations) {
    const byN = new Map(citations.map((c) => [String(c.n), c]));
    answer.textContent = "";
    let last = 0;
    for (const m of text.matchAll(/\[(\d{1,3})\]/g)) {
      answer.append(text.slice(last, m.index));
      const c = byN.get(m[1]);
      if (c && c.chunk_id) {
        const a = document.createElement("a");
        a.className = "cite";
        a.href = "/ui/chunks/" + c.chunk_id;
        a.textContent = m[0];
        a.title = c.location || c.title || "";
        a.setAttribute("hx-get", "/ui/chunks/" + c.chunk_id);
        a.setAttribute("hx-target", "#chunk");
        a.setAttribute("hx-swap", "innerHTML");
        answer.append(a);
      } else {
        answer.append(m[0]);
      }
      last = m.index + m[0].length;
    }
    answer.append(text.slice(last));
    if (window.htmx) htmx.process(answer);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = document.getElementById("ask-submit");
    button.disabled = true;
    answer.textContent = "";
    meta.textContent = "retrieving and generating…";
    rate.hidden = true;
    document.getElementById("rate-result").textContent = "";
    let text = "";
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { "X-CSRF-Token": form.elements.csrf.value },
        credentials: "same-origin",
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error((body.error && body.error.message) || body.detail || response.statusText);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const line = buffer.slice(0, cut).replace(/^data: /, "");
          buffer = buffer.slice(cut + 2);
          if (line === "[DONE]") continue;
          const event = JSON.parse(line);
          if (event.error) throw new Error(event.error.message);
          const choice = (event.choices || [])[0];
          if (choice && choice.text) {
            text += choice.text;
            answer.textContent = text;
          }
          if (event.citations) {
            linkCitations(text, event.citations);
            const id = event.generation_id;
            meta.innerHTML = "";
            const a = document.createElement("a");
            a.href = "/ui/generations/" + id;
            a.textContent = "generation #" + id;
            meta.append("Logged as ", a, " · " + event.citations.length + " cited source(s)");
            rateForm.setAttribute("hx-post", "/ui/generations/" + id + "/feedback");
            rateForm.action = "/ui/generations/" + id + "/feedback";
            if (window.htmx) htmx.process(rateForm);
            rate.hidden = false;
          }
          if (event.usage) meta.append(" · " + event.usage.completion_tokens + " tokens");
        }
      }
    } catch (error) {
      meta.textContent = "";
      const p = document.createElement("p");
      p.className = "error-text";
      p.setAttribute("role", "alert");
      p.textContent = "Error: " + error.message;
      meta.append(p);
    } finally {
      button.disabled = false;
    }
  });
})();

// The playbook editor (web/pages/playbook_editor.py), on top of htmx. Without JavaScript every button posts the
// whole form back; with it, the "Change agent" buttons hide (the agent picker reloads its params fields itself).
(function () {
  "use strict";
  document.documentElement.classList.add("js");
})();

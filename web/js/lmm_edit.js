// LMM Edit frontend extension: socket colours for the pack's custom types and text shown on nodes.
//
// This file is served as /extensions/<pack>/js/lmm_edit.js, three levels below the site root,
// so the frontend's shims (static/scripts/*.js of comfyui-frontend-package) are at ../../../scripts/.
import { app } from "../../../scripts/app.js";
import { ComfyWidgets } from "../../../scripts/widgets.js";

const EXTENSION_NAME = "lmm_edit.sockets";
const INFO_WIDGET = "lmm_edit_info";

const TYPE_COLOURS = {
  LMM_EDIT_LMM: "#b39ddb",
  LMM_EDIT_BRIDGE: "#80cbc4",
  LMM_EDIT_INSTRUCTION: "#ffcc80",
  LMM_EDIT_ADAPTER: "#90caf9",
};

function applyTypeColours() {
  const byType = app.canvas?.default_connection_color_byType;
  const linkColours = globalThis.LGraphCanvas?.link_type_colors;
  for (const [type, colour] of Object.entries(TYPE_COLOURS)) {
    if (byType) byType[type] = colour;
    if (linkColours) linkColours[type] = colour;
  }
}

function showInfoText(node, lines) {
  const value = lines.join("\n");
  const existing = node.widgets?.find((w) => w.name === INFO_WIDGET);
  if (existing) {
    existing.value = value;
    return;
  }
  const widget = ComfyWidgets.STRING(node, INFO_WIDGET, ["STRING", { multiline: true }], app).widget;
  widget.inputEl.readOnly = true;
  widget.serialize = false; // not saved into the workflow's widgets_values
  widget.options.serialize = false; // not sent as a node input in the prompt
  widget.value = value;
}

// ComfyUI serves a web folder twice when both WEB_DIRECTORY (__init__.py) and [tool.comfy] web
// (pyproject.toml) name it, and the frontend refuses a second extension of one name: register once.
//
// Loading a colour palette resets the link colour of every registered socket type the palette
// does not know (ours included), so the colours are applied again after each graph is configured
// and whenever one of our nodes is created.
if (!app.extensions.some((extension) => extension.name === EXTENSION_NAME)) {
  app.registerExtension({
    name: EXTENSION_NAME,
    async setup() {
      applyTypeColours();
    },
    async afterConfigureGraph() {
      applyTypeColours();
    },
    nodeCreated(node) {
      if (node?.comfyClass?.startsWith("LMMEdit_")) applyTypeColours();
    },
    async beforeRegisterNodeDef(nodeType, nodeData) {
      if (!nodeData?.name?.startsWith("LMMEdit_")) return;
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const text = message?.lmm_edit_text;
        if (text?.length) showInfoText(this, text);
      };
    },
  });
}

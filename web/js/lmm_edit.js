// LMM Edit frontend extension: socket colours for the pack's custom types, text and a status badge shown on nodes.
//
// This file is served as /extensions/<pack>/js/lmm_edit.js, three levels below the site root,
// so the frontend's shims (static/scripts/*.js of comfyui-frontend-package) are at ../../../scripts/.
import { app } from "../../../scripts/app.js";
import { ComfyWidgets } from "../../../scripts/widgets.js";

const EXTENSION_NAME = "lmm_edit.sockets";
const INFO_WIDGET = "lmm_edit_info";
// The last run's text and token status, kept in the node's properties so they are shown again when the
// workflow is saved and opened, or its tab switched back to (the frontend rebuilds nodes then).
const LAST_RUN_PROPERTY = "lmm_edit_last_run";
// Token status of LMMEdit_LMMEncode (nodes/token_status.py): green when the LMM wrote its image tokens in order.
const STATUS_BADGES = {
  ok: { text: "image tokens OK", bgColor: "#2e7d32" },
  forced: { text: "image tokens forced", bgColor: "#ef8f00" },
  out_of_order: { text: "image tokens out of order", bgColor: "#ef8f00" },
};

const TYPE_COLOURS = {
  LMM_EDIT_LMM: "#b39ddb",
  LMM_EDIT_BRIDGE: "#80cbc4",
  LMM_EDIT_INSTRUCTION: "#ffcc80",
  LMM_EDIT_ADAPTER: "#90caf9",
  LMM_EDIT_ANY2PIX: "#ce93d8",
  LMM_EDIT_ANY2PIX_ENCODING: "#f48fb1",
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
  // grow the node so the new text box fits inside it (never shrink what the user sized)
  const needed = node.computeSize?.();
  if (needed) node.setSize([Math.max(node.size[0], needed[0]), Math.max(node.size[1], needed[1])]);
}

// A badge on the node's title (frontend LGraphBadge): drawn from the node's current status on every frame.
function statusBadge(node) {
  const style = STATUS_BADGES[node.lmmEditStatus];
  return new LGraphBadge({ text: style?.text ?? "", fgColor: "#ffffff", bgColor: style?.bgColor ?? "#000000" });
}

function showStatus(node, status) {
  node.lmmEditStatus = status;
  if (!node.lmmEditBadge && globalThis.LGraphBadge && Array.isArray(node.badges)) {
    node.lmmEditBadge = () => statusBadge(node);
    node.badges.push(node.lmmEditBadge);
  }
  node.setDirtyCanvas?.(true, true);
}

function showLastRun(node, run) {
  if (run.text) showInfoText(node, [run.text]);
  if (run.status) showStatus(node, run.status);
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
        if (!text?.length) return;
        const run = { text: text.join("\n"), status: message.lmm_edit_status?.[0] ?? null };
        this.properties = this.properties ?? {};
        this.properties[LAST_RUN_PROPERTY] = run;
        showLastRun(this, run);
      };
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        onConfigure?.apply(this, arguments);
        const run = this.properties?.[LAST_RUN_PROPERTY];
        if (run) showLastRun(this, run);
      };
    },
  });
}

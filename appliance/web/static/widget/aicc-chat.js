/*
 * aicc web chat widget: one script tag on the customer's site, nothing loaded from anywhere else.
 *
 *   <script src="https://APP/static/widget/aicc-chat.js" data-key="KEY" data-lang="zh" async></script>
 *
 * data-key: a widget key of the appliance (app.yml webchat_keys); the page's origin must be one of
 * webchat_origins. data-lang: zh or en (default: the browser's language). data-open="true" opens
 * the panel at once.
 *
 * The panel lives in a shadow root (the site's styles do not reach it, its styles do not leak out).
 * Every text is set with textContent: nothing a visitor, the bot or an agent writes is ever HTML.
 * The visitor id is kept in localStorage (per widget key), so a reload or another tab resumes the
 * same conversation; each (re)connection asks for a fresh token and receives the whole history;
 * messages typed while offline wait in an outbox and are sent again with the same client_id (the
 * server stores each once). Reconnects back off from 1 s to 30 s.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || !script.src) {
    return;
  }
  var KEY = script.getAttribute("data-key") || "";
  var BASE = new URL(script.src).origin;
  var navLang = (navigator.language || "en").toLowerCase();
  var LANG = script.getAttribute("data-lang") || (navLang.indexOf("zh") === 0 ? "zh" : "en");
  if (LANG !== "zh" && LANG !== "en") {
    LANG = "en";
  }
  var STORE = "aicc-chat-visitor:" + KEY;

  var TEXT = {
    zh: {
      launcher: "在线客服",
      title: "在线客服",
      close: "关闭",
      placeholder: "请输入消息…",
      send: "发送",
      connecting: "正在连接…",
      reconnecting: "连接已断开，正在重新连接…",
      botTyping: "智能客服正在输入…",
      agentTyping: "客服正在输入…",
      queued: "正在为您转接人工客服，请稍候。",
      agent: "人工客服已接入。",
      resolved: "对话已结束。发送新消息即可开始新的对话。",
      rateLimited: "发送太快了，请稍后再试。",
      tooLong: "消息太长（最多4000字）。",
      refused: "消息未能发送：",
      failed: "暂时无法连接客服，请稍后再试。",
      you: "我",
      bot: "智能客服",
      agentName: "客服",
      system: "系统",
      sending: "发送中",
    },
    en: {
      launcher: "Chat with us",
      title: "Customer service",
      close: "Close",
      placeholder: "Type a message…",
      send: "Send",
      connecting: "Connecting…",
      reconnecting: "Connection lost, reconnecting…",
      botTyping: "The assistant is typing…",
      agentTyping: "An agent is typing…",
      queued: "Connecting you to an agent, please wait.",
      agent: "An agent has joined.",
      resolved: "This conversation has ended. Send a message to start a new one.",
      rateLimited: "You are sending too fast; please wait a moment.",
      tooLong: "The message is too long (4000 characters at most).",
      refused: "The message was not sent: ",
      failed: "Chat is unavailable right now; please try again later.",
      you: "You",
      bot: "Assistant",
      agentName: "Agent",
      system: "System",
      sending: "sending",
    },
  }[LANG];

  var CSS =
    ":host{all:initial}" +
    ".launcher{position:fixed;right:20px;bottom:20px;z-index:2147483000;background:#1f6feb;color:#fff;" +
    "border:0;border-radius:24px;padding:12px 18px;font:15px/1.2 system-ui,sans-serif;cursor:pointer;" +
    "box-shadow:0 2px 8px rgba(0,0,0,.25)}" +
    ".panel{position:fixed;right:20px;bottom:20px;z-index:2147483001;width:340px;max-width:calc(100vw - 40px);" +
    "height:480px;max-height:calc(100vh - 40px);display:flex;flex-direction:column;background:#fff;color:#222;" +
    "border-radius:10px;box-shadow:0 4px 18px rgba(0,0,0,.3);font:14px/1.4 system-ui,sans-serif;overflow:hidden}" +
    ".panel[hidden],.launcher[hidden],.typing[hidden],.notice[hidden]{display:none}" +
    ".head{display:flex;align-items:center;justify-content:space-between;background:#1f6feb;color:#fff;" +
    "padding:10px 12px;font-weight:600}" +
    ".head button{background:none;border:0;color:#fff;font-size:18px;cursor:pointer}" +
    ".log{flex:1;overflow-y:auto;padding:10px;background:#f6f8fa}" +
    ".msg{margin:6px 0;display:flex;flex-direction:column}" +
    ".msg .who{font-size:11px;color:#666;margin:0 4px 2px}" +
    ".msg .body{padding:7px 10px;border-radius:10px;max-width:80%;white-space:pre-wrap;word-wrap:break-word;" +
    "background:#fff;border:1px solid #e1e4e8;align-self:flex-start}" +
    ".msg.customer{align-items:flex-end}.msg.customer .body{background:#1f6feb;color:#fff;border-color:#1f6feb}" +
    ".msg.pending .body{opacity:.6}" +
    ".msg.system .body,.notice{font-size:12px;color:#555;background:#fffbdd;border-color:#f0e6a0}" +
    ".notice{padding:6px 10px;border-top:1px solid #eee}" +
    ".typing{font-size:12px;color:#666;padding:2px 12px}" +
    "form{display:flex;border-top:1px solid #e1e4e8}" +
    "textarea{flex:1;border:0;padding:10px;resize:none;font:inherit;height:44px;outline:none}" +
    "form button{border:0;background:#1f6feb;color:#fff;padding:0 14px;cursor:pointer;font:inherit}";

  // --- the panel -------------------------------------------------------------------------------

  var host = document.createElement("div");
  host.setAttribute("data-aicc-chat", "");
  var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
  try {
    var sheet = new CSSStyleSheet(); // constructed sheets are not inline styles: the site's CSP allows them
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
  } catch (e) {
    var style = document.createElement("style");
    style.textContent = CSS;
    root.appendChild(style);
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) {
      node.className = cls;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  var launcher = el("button", "launcher", TEXT.launcher);
  launcher.type = "button";
  launcher.setAttribute("part", "launcher");
  var panel = el("div", "panel");
  panel.hidden = true;
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", TEXT.title);
  var head = el("div", "head");
  head.appendChild(el("span", "", TEXT.title));
  var closeBtn = el("button", "close", "×");
  closeBtn.type = "button";
  closeBtn.setAttribute("aria-label", TEXT.close);
  head.appendChild(closeBtn);
  var log = el("div", "log");
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  var typingLine = el("div", "typing");
  typingLine.hidden = true;
  var notice = el("div", "notice");
  notice.hidden = true;
  var form = el("form");
  var input = el("textarea");
  input.placeholder = TEXT.placeholder;
  input.maxLength = 4000;
  input.setAttribute("aria-label", TEXT.placeholder);
  var sendBtn = el("button", "send", TEXT.send);
  sendBtn.type = "submit";
  form.appendChild(input);
  form.appendChild(sendBtn);
  panel.appendChild(head);
  panel.appendChild(log);
  panel.appendChild(typingLine);
  panel.appendChild(notice);
  panel.appendChild(form);
  root.appendChild(launcher);
  root.appendChild(panel);

  function mount() {
    document.body.appendChild(host);
  }
  if (document.body) {
    mount();
  } else {
    document.addEventListener("DOMContentLoaded", mount);
  }

  function showNotice(text) {
    notice.textContent = text || "";
    notice.hidden = !text;
  }

  var typingTimer = null;
  function showTyping(author) {
    typingLine.textContent = author === "agent" ? TEXT.agentTyping : TEXT.botTyping;
    typingLine.hidden = false;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(hideTyping, author === "agent" ? 6000 : 20000);
  }
  function hideTyping() {
    typingLine.hidden = true;
    clearTimeout(typingTimer);
  }

  // --- messages --------------------------------------------------------------------------------

  var shown = {}; // message id -> element
  var outbox = []; // {client_id, body, node}: typed, not acknowledged yet

  function who(author) {
    return { customer: TEXT.you, bot: TEXT.bot, agent: TEXT.agentName, system: TEXT.system }[author] || "";
  }

  function bubble(author, body, pending) {
    var node = el("div", "msg " + author + (pending ? " pending" : ""));
    node.setAttribute("data-author", author);
    node.appendChild(el("span", "who", who(author)));
    node.appendChild(el("div", "body", body));
    return node;
  }

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }

  function addMessage(m) {
    if (shown[m.id]) {
      return;
    }
    var waiting = null;
    for (var i = 0; i < outbox.length; i++) {
      if (m.client_id && outbox[i].client_id === m.client_id) {
        waiting = outbox[i];
        outbox.splice(i, 1);
        break;
      }
    }
    var node;
    if (waiting) {
      node = waiting.node;
      node.classList.remove("pending");
    } else {
      node = bubble(m.author, m.body, false);
      log.appendChild(node);
    }
    node.setAttribute("data-id", String(m.id));
    shown[m.id] = node;
    if (m.author === "bot" || m.author === "agent") {
      hideTyping();
    }
    scrollDown();
  }

  function systemLine(text) {
    log.appendChild(bubble("system", text, false));
    scrollDown();
  }

  // --- the connection --------------------------------------------------------------------------

  var ws = null;
  var attempt = 0;
  var started = false;
  var ended = false;
  var handler = null;
  var reconnectTimer = null;

  function storedVisitor() {
    try {
      return window.localStorage.getItem(STORE);
    } catch (e) {
      return null;
    }
  }
  function storeVisitor(id) {
    try {
      window.localStorage.setItem(STORE, id);
    } catch (e) {
      /* private mode: the conversation lasts as long as the page */
    }
  }

  function openSession() {
    var body = { key: KEY, language: LANG };
    var visitor = storedVisitor();
    if (visitor) {
      body.visitor = visitor;
    }
    return fetch(BASE + "/chat/v1/sessions", {
      method: "POST",
      mode: "cors",
      credentials: "omit",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }).then(function (r) {
      if (!r.ok) {
        throw new Error("session " + r.status);
      }
      return r.json();
    });
  }

  function connect() {
    clearTimeout(reconnectTimer);
    showNotice(attempt ? TEXT.reconnecting : TEXT.connecting);
    openSession()
      .then(function (session) {
        storeVisitor(session.visitor);
        var url = BASE.replace(/^http/, "ws") + session.ws_path + "?token=" + encodeURIComponent(session.token);
        ws = new WebSocket(url);
        ws.onmessage = function (event) {
          var frame;
          try {
            frame = JSON.parse(event.data);
          } catch (e) {
            return;
          }
          onFrame(frame);
        };
        ws.onclose = function () {
          ws = null;
          if (!ended) {
            retry();
          }
        };
      })
      .catch(function () {
        retry();
      });
  }

  function retry() {
    attempt += 1;
    var delay = Math.min(30000, 1000 * Math.pow(2, Math.min(attempt - 1, 5)));
    delay = delay / 2 + Math.random() * (delay / 2);
    showNotice(attempt > 6 ? TEXT.failed : TEXT.reconnecting);
    reconnectTimer = setTimeout(connect, delay);
  }

  function sendFrame(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "history":
        attempt = 0;
        showNotice("");
        for (var i = 0; i < frame.messages.length; i++) {
          addMessage(frame.messages[i]);
        }
        // What was typed while offline goes again, under the same client_id.
        for (var j = 0; j < outbox.length; j++) {
          sendFrame({ type: "message", client_id: outbox[j].client_id, body: outbox[j].body });
        }
        break;
      case "message":
        addMessage(frame);
        break;
      case "ack":
        break; // the message itself follows (or came already) as a "message" frame
      case "typing":
        showTyping(frame.author);
        break;
      case "status":
        onStatus(frame);
        break;
      case "error":
        onError(frame);
        break;
    }
  }

  function onStatus(frame) {
    if (frame.status === "resolved") {
      ended = true;
      hideTyping();
      if (handler !== null) {
        systemLine(TEXT.resolved);
      }
      if (ws) {
        ws.close();
      }
    } else if (handler !== null && frame.handler !== handler) {
      if (frame.handler === "queue") {
        systemLine(TEXT.queued);
      } else if (frame.handler === "agent") {
        systemLine(TEXT.agent);
      }
    }
    handler = frame.handler;
  }

  function dropFromOutbox(clientId) {
    for (var i = 0; i < outbox.length; i++) {
      if (outbox[i].client_id === clientId) {
        outbox[i].node.remove();
        outbox.splice(i, 1);
        return;
      }
    }
  }

  function onError(frame) {
    if (frame.code === "rate_limited") {
      showNotice(TEXT.rateLimited);
      var wait = Math.max(1, Number(frame.retry_after) || 2) * 1000;
      setTimeout(function () {
        showNotice("");
        for (var i = 0; i < outbox.length; i++) {
          if (outbox[i].client_id === frame.client_id) {
            sendFrame({ type: "message", client_id: outbox[i].client_id, body: outbox[i].body });
          }
        }
      }, wait);
      return;
    }
    if (frame.code === "resolved") {
      ended = true;
    }
    if (frame.client_id) {
      dropFromOutbox(frame.client_id);
    }
    showNotice(frame.code === "too_long" ? TEXT.tooLong : TEXT.refused + (frame.message || frame.code));
  }

  function newClientId() {
    var bytes = new Uint8Array(12);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map
      .call(bytes, function (b) {
        return ("0" + b.toString(16)).slice(-2);
      })
      .join("");
  }

  function send(text) {
    var item = { client_id: newClientId(), body: text, node: bubble("customer", text, true) };
    log.appendChild(item.node);
    scrollDown();
    outbox.push(item);
    if (ended) {
      // A new conversation: a new session, whose history is empty; the outbox goes after it.
      ended = false;
      handler = null;
      attempt = 0;
      connect();
      return;
    }
    sendFrame({ type: "message", client_id: item.client_id, body: text });
  }

  // --- the visitor's hands ---------------------------------------------------------------------

  var lastTyping = 0;
  input.addEventListener("input", function () {
    var now = Date.now();
    if (now - lastTyping > 2000) {
      lastTyping = now;
      sendFrame({ type: "typing" });
    }
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit"));
    }
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) {
      return;
    }
    if (text.length > 4000) {
      showNotice(TEXT.tooLong);
      return;
    }
    input.value = "";
    send(text);
  });

  function open() {
    launcher.hidden = true;
    panel.hidden = false;
    input.focus();
    if (!started) {
      started = true;
      connect();
    }
  }
  launcher.addEventListener("click", open);
  closeBtn.addEventListener("click", function () {
    panel.hidden = true;
    launcher.hidden = false;
  });
  if (script.getAttribute("data-open") === "true") {
    open();
  }
})();

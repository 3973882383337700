// zh-CN / en strings and live language switching.
// Static text is marked in the HTML with data-i18n (textContent),
// data-i18n-title, data-i18n-placeholder and data-i18n-aria (aria-label);
// dynamic text is re-rendered by onLangChange listeners.

const STORAGE_KEY = 'aicc.lang';

const STRINGS = {
  en: {
    'common.language': 'Language',
    'common.logout': 'Sign out',
    'common.yes': 'Yes',
    'common.no': 'No',

    'login.title': 'Sign in',
    'login.username': 'Username',
    'login.password': 'Password',
    'login.submit': 'Sign in',
    'login.missing': 'Enter your username and password.',
    'login.bad': 'Wrong username or password.',
    'login.throttled': 'Too many attempts. Please wait and try again.',
    'login.expired': 'Your session has expired. Please sign in again.',

    'err.generic': 'Something went wrong. Please try again.',
    'err.network': 'Cannot reach the server. Check the network and try again.',

    'stream.stopped': 'Offline',
    'stream.connecting': 'Connecting…',
    'stream.live': 'Live',
    'stream.reconnecting': 'Reconnecting…',

    'role.agent': 'Agent',
    'role.supervisor': 'Supervisor',
    'role.admin': 'Administrator',
    'role.auditor': 'Auditor',

    'status.ready': 'Ready',
    'status.away': 'Away',
    'status.logged_out': 'Offline',
    'state.idle': 'Idle',
    'state.reserved': 'Ringing',
    'state.busy': 'On call',
    'state.wrap_up': 'Wrap-up',
    'reason.break': 'Break',
    'reason.lunch': 'Lunch',
    'reason.training': 'Training',
    'reason.meeting': 'Meeting',

    'desk.title': 'Agent desktop',
    'desk.loginHint': 'Agent desktop',
    'desk.myStatus': 'My status',
    'desk.timeInState': 'Time in this state',
    'desk.readyHint': 'Take calls (Ctrl+Alt+R)',
    'desk.readyNeedsPhone': 'The phone must be registered before you can go Ready',
    'desk.awayReason': 'Away reason',
    'desk.goOffline': 'Log out of queues',
    'desk.goOfflineHint': 'Stop receiving contacts but stay signed in',
    'desk.phone': 'Phone',
    'desk.talkTime': 'Talk time',
    'desk.myQueues': 'My queues',
    'desk.noQueues': 'No queues assigned.',
    'desk.noContact': 'No active contact. Calls appear here when you are Ready.',
    'desk.noAgentProfile': 'No agent profile',

    'phone.off': 'Phone off',
    'phone.registering': 'Phone connecting…',
    'phone.registered': 'Phone registered',
    'phone.failed': 'Phone failed',
    'phone.no-mic': 'Microphone blocked',
    'phone.retry': 'Retry',
    'phone.micBlocked': 'Microphone blocked: allow it for this site to take calls.',
    'phone.lost': 'Phone connection lost, reconnecting…',
    'phone.reconnected': 'Phone reconnected.',
    'phone.fail.auth': 'Phone registration was rejected. Press Retry, or sign in again.',
    'phone.fail.no-profile': 'This account has no agent profile, so it cannot take calls. Ask an administrator.',
    'phone.fail.no-extension': 'No phone extension is assigned to you. Ask an administrator.',
    'phone.fail.network': 'Cannot reach the server to start the phone. Press Retry.',
    'phone.fail.token': 'Could not get phone credentials. Press Retry.',
    'phone.fail.session': 'Your session has expired. Please sign in again.',
    'phone.fail.sip': 'Phone registration failed; retrying shortly.',
    'phone.fail.config': 'The phone could not start (configuration error).',
    'phone.fail.nolib': 'The softphone library failed to load. Reload the page.',

    'call.answer': 'Answer',
    'call.answerHint': 'Answer (Ctrl+Alt+A)',
    'call.hangup': 'Hang up',
    'call.hangupHint': 'Hang up or decline (Ctrl+Alt+H)',
    'call.hold': 'Hold',
    'call.unhold': 'Resume',
    'call.mute': 'Mute',
    'call.unmute': 'Unmute',
    'call.keypad': 'Keypad',
    'call.transferTo': 'Transfer to',
    'call.transferPlaceholder': 'Transfer to ext. / number',
    'call.transfer': 'Blind transfer',
    'call.number': 'Number',
    'call.dialPlaceholder': 'Number to call',
    'call.dial': 'Call',
    'call.state.idle': 'Idle',
    'call.state.ringing': 'Ringing',
    'call.state.dialing': 'Calling…',
    'call.state.talking': 'Talking',
    'call.state.held': 'On hold',
    'call.state.ended': 'Call ended',
    'call.titleIncoming': '☎ Incoming call',
    'call.answerFailed': 'The call could not be answered.',
    'call.transferFailed': 'Transfer failed. {cause}',
    'call.transferInvalid': 'Enter a valid extension or number to transfer to.',
    'call.transfer.sent': 'Transferring to {target}…',
    'call.transfer.requested': 'Transfer accepted by the server…',
    'call.transfer.accepted': 'Call transferred.',
    'call.notRegistered': 'The phone is not registered.',
    'call.busy': 'Finish the current call first.',
    'call.invalidNumber': 'Enter a valid number.',
    'call.dialFailed': 'The call could not be started.',

    'queue.name': 'Queue',
    'queue.waiting': 'Waiting',
    'queue.longest': 'Longest',
    'queue.sl': 'Service level',
    'queue.answered': 'Answered',
    'queue.abandoned': 'Abandoned',
    'queue.asa': 'ASA',
    'queue.agents': 'Agents',

    'wrapup.title': 'Wrap-up',
    'wrapup.remaining': 'Time left',
    'wrapup.disposition': 'Disposition',
    'wrapup.choose': 'Choose…',
    'wrapup.note': 'Note',
    'wrapup.submit': 'Finish wrap-up',
    'wrapup.needDisposition': 'Choose a disposition first.',
    'wrapup.noContact': 'No contact to wrap up.',
    'wrapup.saved': 'Wrap-up saved.',
    'wrapup.loadFailed': 'Could not load dispositions: {error}',

    'pop.caller': 'Caller',
    'pop.queue': 'Queue',
    'pop.wait': 'Waited',
    'pop.language': 'Language',
    'pop.intent': 'Intent',
    'pop.summary': 'Bot summary',
    'pop.transcript': 'Transcript',
    'pop.customer': 'Customer',
    'pop.unknownCaller': 'Unknown caller',
    'pop.noSummary': 'No summary.',
    'pop.noTranscript': 'No transcript.',
    'pop.noCustomer': 'No matching customer record.',
    'pop.phase.idle': 'Idle',
    'pop.phase.reserved': 'Ringing',
    'pop.phase.busy': 'On call',
    'pop.phase.wrap_up': 'Wrap-up',
    'speaker.caller': 'Caller',
    'speaker.bot': 'Bot',
    'speaker.agent': 'Agent',

    'cust.id': 'Customer ID',
    'cust.name': 'Name',
    'cust.tier': 'Tier',
    'cust.phone': 'Phone',
    'cust.email': 'Email',
    'cust.account': 'Account',
    'cust.language': 'Language',
    'cust.segment': 'Segment',
    'cust.vip': 'VIP',
    'cust.balance': 'Balance',
    'cust.city': 'City',
    'cust.notes': 'Notes',
    'cust.status': 'Status',
    'cust.orders': 'Orders',
    'cust.recent_orders': 'Recent orders',
    'cust.order_id': 'Order',
    'cust.date': 'Date',
    'cust.amount': 'Amount',
    'cust.total': 'Total',
    'cust.items': 'Items',
    'cust.created_at': 'Created',

    'wall.title': 'Wallboard',
    'wall.loginHint': 'Supervisor wallboard',
    'wall.totals': 'Totals',
    'wall.kpiWaiting': 'Waiting',
    'wall.kpiLongest': 'Longest wait',
    'wall.queues': 'Queues',
    'wall.agents': 'Agents',
    'wall.waiting': 'Waiting contacts',
    'wall.noQueues': 'No queues.',
    'wall.noAgents': 'No agents.',
    'wall.noWaiting': 'Nobody is waiting.',
    'wall.longWait': 'Long wait',
    'wall.setStatusFor': 'Set status for {name}',
    'wall.apply': 'Apply',
    'wall.statusSet': '{name}: status set to {status}.',
    'wall.readOnly': 'Only supervisors can change agent status',
    'wall.readOnlyNotice': 'Read-only view: only supervisors can change agent status.',
    'agents.ready': 'Ready',
    'agents.busy': 'On call',
    'agents.wrap_up': 'Wrap-up',
    'agents.away': 'Away',
    'agent.name': 'Agent',
    'agent.extension': 'Ext.',
    'agent.status': 'Status',
    'agent.since': 'In state',
    'agent.contact': 'Contact',
    'agent.actions': 'Set status',

    'ops.title': 'Operations',
    'ops.loginHint': 'Operations page for administrators and auditors',
    'ops.range': 'Time range',
    'ops.range.1h': 'Last hour',
    'ops.range.6h': 'Last 6 hours',
    'ops.range.24h': 'Last 24 hours',
    'ops.range.7d': 'Last 7 days',
    'ops.runbook': 'Runbook',
    'ops.dashboards': 'Dashboards',
    'ops.updated': 'Updated {time}',
    'ops.loading': 'Loading…',
    'ops.noData': 'No data in this time range.',
    'ops.noPrometheus': 'This site has no [monitoring] host, so there is no Prometheus to read. Add one to the inventory and run aicc install.',
    'ops.forbidden': 'The operations page is for administrators and auditors; your role ({role}) cannot open it.',
    'ops.source': 'Prometheus: {url}. Each panel runs only its own queries.',
    'ops.showPromql': 'The PromQL of this panel',
    'ops.legend': 'legend',
    'ops.target': 'Target ≥ {value}',
    'ops.limit': 'Limit ≤ {value}',
    'ops.beyond': 'Beyond the threshold',
    'ops.noChartLib': 'The chart library failed to load. Reload the page.',
  },

  zh: {
    'common.language': '语言',
    'common.logout': '退出登录',
    'common.yes': '是',
    'common.no': '否',

    'login.title': '登录',
    'login.username': '用户名',
    'login.password': '密码',
    'login.submit': '登录',
    'login.missing': '请输入用户名和密码。',
    'login.bad': '用户名或密码错误。',
    'login.throttled': '尝试次数过多，请稍后再试。',
    'login.expired': '会话已过期，请重新登录。',

    'err.generic': '操作失败，请重试。',
    'err.network': '无法连接服务器，请检查网络后重试。',

    'stream.stopped': '离线',
    'stream.connecting': '连接中…',
    'stream.live': '实时',
    'stream.reconnecting': '重新连接中…',

    'role.agent': '坐席',
    'role.supervisor': '班长',
    'role.admin': '管理员',
    'role.auditor': '审计员',

    'status.ready': '就绪',
    'status.away': '离开',
    'status.logged_out': '离线',
    'state.idle': '空闲',
    'state.reserved': '振铃中',
    'state.busy': '通话中',
    'state.wrap_up': '话后整理',
    'reason.break': '小休',
    'reason.lunch': '午餐',
    'reason.training': '培训',
    'reason.meeting': '会议',

    'desk.title': '坐席工作台',
    'desk.loginHint': '坐席工作台',
    'desk.myStatus': '我的状态',
    'desk.timeInState': '当前状态持续时间',
    'desk.readyHint': '开始接听（Ctrl+Alt+R）',
    'desk.readyNeedsPhone': '电话注册成功后才能置为就绪',
    'desk.awayReason': '离开原因',
    'desk.goOffline': '退出队列',
    'desk.goOfflineHint': '停止接收来电，但保持登录',
    'desk.phone': '电话',
    'desk.talkTime': '通话时长',
    'desk.myQueues': '我的队列',
    'desk.noQueues': '未分配队列。',
    'desk.noContact': '当前没有联络。置为就绪后，来电会显示在这里。',
    'desk.noAgentProfile': '无坐席档案',

    'phone.off': '电话未连接',
    'phone.registering': '电话连接中…',
    'phone.registered': '电话已注册',
    'phone.failed': '电话注册失败',
    'phone.no-mic': '麦克风被阻止',
    'phone.retry': '重试',
    'phone.micBlocked': '麦克风被阻止：请允许本网站使用麦克风才能接听电话。',
    'phone.lost': '电话连接已断开，正在重新连接…',
    'phone.reconnected': '电话已重新连接。',
    'phone.fail.auth': '电话注册被拒绝。请点击重试，或重新登录。',
    'phone.fail.no-profile': '该账号没有坐席档案，无法接听电话。请联系管理员。',
    'phone.fail.no-extension': '尚未为您分配分机号。请联系管理员。',
    'phone.fail.network': '无法连接服务器启动电话，请点击重试。',
    'phone.fail.token': '无法获取电话凭据，请点击重试。',
    'phone.fail.session': '会话已过期，请重新登录。',
    'phone.fail.sip': '电话注册失败，稍后自动重试。',
    'phone.fail.config': '电话无法启动（配置错误）。',
    'phone.fail.nolib': '软电话组件加载失败，请刷新页面。',

    'call.answer': '接听',
    'call.answerHint': '接听（Ctrl+Alt+A）',
    'call.hangup': '挂断',
    'call.hangupHint': '挂断或拒接（Ctrl+Alt+H）',
    'call.hold': '保持',
    'call.unhold': '恢复',
    'call.mute': '静音',
    'call.unmute': '取消静音',
    'call.keypad': '拨号盘',
    'call.transferTo': '转接至',
    'call.transferPlaceholder': '转接分机 / 号码',
    'call.transfer': '盲转',
    'call.number': '号码',
    'call.dialPlaceholder': '外呼号码',
    'call.dial': '呼叫',
    'call.state.idle': '空闲',
    'call.state.ringing': '振铃中',
    'call.state.dialing': '呼叫中…',
    'call.state.talking': '通话中',
    'call.state.held': '已保持',
    'call.state.ended': '通话结束',
    'call.titleIncoming': '☎ 来电',
    'call.answerFailed': '无法接听该来电。',
    'call.transferFailed': '转接失败。{cause}',
    'call.transferInvalid': '请输入有效的转接分机或号码。',
    'call.transfer.sent': '正在转接至 {target}…',
    'call.transfer.requested': '服务器已接受转接请求…',
    'call.transfer.accepted': '通话已转接。',
    'call.notRegistered': '电话未注册。',
    'call.busy': '请先结束当前通话。',
    'call.invalidNumber': '请输入有效号码。',
    'call.dialFailed': '无法发起呼叫。',

    'queue.name': '队列',
    'queue.waiting': '排队',
    'queue.longest': '最长等待',
    'queue.sl': '服务水平',
    'queue.answered': '已接听',
    'queue.abandoned': '已放弃',
    'queue.asa': '平均应答',
    'queue.agents': '坐席',

    'wrapup.title': '话后整理',
    'wrapup.remaining': '剩余时间',
    'wrapup.disposition': '处理结果',
    'wrapup.choose': '请选择…',
    'wrapup.note': '备注',
    'wrapup.submit': '完成整理',
    'wrapup.needDisposition': '请先选择处理结果。',
    'wrapup.noContact': '没有需要整理的联络。',
    'wrapup.saved': '话后整理已保存。',
    'wrapup.loadFailed': '无法加载处理结果列表：{error}',

    'pop.caller': '来电者',
    'pop.queue': '队列',
    'pop.wait': '等待',
    'pop.language': '语言',
    'pop.intent': '意图',
    'pop.summary': '机器人摘要',
    'pop.transcript': '对话记录',
    'pop.customer': '客户',
    'pop.unknownCaller': '未知来电',
    'pop.noSummary': '无摘要。',
    'pop.noTranscript': '无对话记录。',
    'pop.noCustomer': '未匹配到客户资料。',
    'pop.phase.idle': '空闲',
    'pop.phase.reserved': '振铃中',
    'pop.phase.busy': '通话中',
    'pop.phase.wrap_up': '话后整理',
    'speaker.caller': '客户',
    'speaker.bot': '机器人',
    'speaker.agent': '坐席',

    'cust.id': '客户编号',
    'cust.name': '姓名',
    'cust.tier': '等级',
    'cust.phone': '电话',
    'cust.email': '邮箱',
    'cust.account': '账户',
    'cust.language': '语言',
    'cust.segment': '客群',
    'cust.vip': 'VIP',
    'cust.balance': '余额',
    'cust.city': '城市',
    'cust.notes': '备注',
    'cust.status': '状态',
    'cust.orders': '订单',
    'cust.recent_orders': '最近订单',
    'cust.order_id': '订单号',
    'cust.date': '日期',
    'cust.amount': '金额',
    'cust.total': '合计',
    'cust.items': '商品',
    'cust.created_at': '创建时间',

    'wall.title': '监控大屏',
    'wall.loginHint': '班长监控大屏',
    'wall.totals': '汇总',
    'wall.kpiWaiting': '排队中',
    'wall.kpiLongest': '最长等待',
    'wall.queues': '队列',
    'wall.agents': '坐席',
    'wall.waiting': '排队联络',
    'wall.noQueues': '暂无队列。',
    'wall.noAgents': '暂无坐席。',
    'wall.noWaiting': '当前无人排队。',
    'wall.longWait': '等待过长',
    'wall.setStatusFor': '设置 {name} 的状态',
    'wall.apply': '应用',
    'wall.statusSet': '{name}：状态已设为{status}。',
    'wall.readOnly': '只有班长可以修改坐席状态',
    'wall.readOnlyNotice': '只读视图：只有班长可以修改坐席状态。',
    'agents.ready': '就绪',
    'agents.busy': '通话',
    'agents.wrap_up': '整理',
    'agents.away': '离开',
    'agent.name': '坐席',
    'agent.extension': '分机',
    'agent.status': '状态',
    'agent.since': '持续',
    'agent.contact': '联络',
    'agent.actions': '设置状态',

    'ops.title': '运维',
    'ops.loginHint': '运维页面（管理员与审计员）',
    'ops.range': '时间范围',
    'ops.range.1h': '最近 1 小时',
    'ops.range.6h': '最近 6 小时',
    'ops.range.24h': '最近 24 小时',
    'ops.range.7d': '最近 7 天',
    'ops.runbook': '运维手册',
    'ops.dashboards': '仪表盘',
    'ops.updated': '更新于 {time}',
    'ops.loading': '加载中…',
    'ops.noData': '此时间范围内没有数据。',
    'ops.noPrometheus': '本站点没有 [monitoring] 主机，无法读取 Prometheus。请在清单中添加并运行 aicc install。',
    'ops.forbidden': '运维页面仅供管理员和审计员使用；您的角色（{role}）无权打开。',
    'ops.source': 'Prometheus：{url}。每个面板只运行它自己的查询。',
    'ops.showPromql': '此面板的 PromQL',
    'ops.legend': '图例',
    'ops.target': '目标 ≥ {value}',
    'ops.limit': '上限 ≤ {value}',
    'ops.beyond': '超出阈值',
    'ops.noChartLib': '图表库加载失败，请刷新页面。',
  },
};

export const LANGS = Object.keys(STRINGS);

function normalise(value) {
  const v = String(value || '').toLowerCase();
  if (v.startsWith('zh')) return 'zh';
  if (v.startsWith('en')) return 'en';
  return null;
}

function detect() {
  try {
    const saved = normalise(localStorage.getItem(STORAGE_KEY));
    if (saved) return saved;
  } catch { /* storage disabled */ }
  return normalise(navigator.language) === 'zh' ? 'zh' : 'en';
}

let lang = detect();
const listeners = new Set();

function setHtmlLang() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
}
setHtmlLang();

export const getLang = () => lang;

export function has(key) {
  return Object.prototype.hasOwnProperty.call(STRINGS[lang], key)
    || Object.prototype.hasOwnProperty.call(STRINGS.en, key);
}

/** Translate key, filling {name} placeholders from params (values are plain text). */
export function t(key, params) {
  let text = STRINGS[lang][key];
  if (text === undefined) text = STRINGS.en[key];
  if (text === undefined) return key;
  if (!params) return text;
  return text.replace(/\{(\w+)\}/g, (match, name) => (
    params[name] === undefined || params[name] === null ? '' : String(params[name])
  ));
}

/** Translate every marked element under root. */
export function applyI18n(root = document) {
  for (const node of root.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll('[data-i18n-title]')) node.title = t(node.dataset.i18nTitle);
  for (const node of root.querySelectorAll('[data-i18n-placeholder]')) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of root.querySelectorAll('[data-i18n-aria]')) node.setAttribute('aria-label', t(node.dataset.i18nAria));
}

export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function setLang(next) {
  const value = normalise(next);
  if (!value || value === lang) return;
  lang = value;
  try { localStorage.setItem(STORAGE_KEY, lang); } catch { /* storage disabled */ }
  setHtmlLang();
  applyI18n();
  for (const fn of listeners) {
    try { fn(lang); } catch (err) { console.error('language listener failed', err); }
  }
}

/** Wire the header <select id="lang-switch">. */
export function bindLangSwitch(select) {
  if (!select) return;
  select.value = lang;
  select.addEventListener('change', () => setLang(select.value));
  onLangChange(() => { select.value = lang; });
}

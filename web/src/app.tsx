// The application shell: the login screen, or the three panes (list, chat,
// details) with the session running behind them.
import { useEffect } from "preact/hooks";
import { AuthScreen } from "./auth";
import { ChatView, EmptyMain } from "./chat";
import { ContactPage, DetailsPane } from "./details";
import { errorMessage } from "./errors";
import { lang, t } from "./i18n";
import { activeId, contactId, detailsOpen, pane, reportError, session, setErrorText, sortedConversations, tab, toast } from "./state";
import { Sidebar } from "./sidebar";
import { boot, stopConnection } from "./ws";

setErrorText((e) => errorMessage(e));

export function App() {
  useEffect(() => {
    document.documentElement.lang = lang.value === "zh" ? "zh-CN" : "en";
  }, [lang.value]);
  // The tab's title counts unread messages of conversations not muted.
  const unread = sortedConversations.value.reduce((n, c) => n + (c.muted ? 0 : Number(c.unreadCount ?? 0)), 0);
  useEffect(() => {
    document.title = unread > 0 ? `(${unread > 99 ? "99+" : unread}) natter` : "natter";
  }, [unread]);
  const s = session.value;
  return (
    <>
      {s ? <Shell key={s.userId} /> : <AuthScreen />}
      {toast.value && (
        <div class={`toast ${toast.value.error ? "error" : ""}`} role={toast.value.error ? "alert" : "status"}>{toast.value.text}</div>
      )}
    </>
  );
}

function Shell() {
  useEffect(() => {
    boot().catch(reportError);
    return () => stopConnection();
  }, []);
  void t();
  const id = activeId.value;
  const showContact = tab.value === "contacts" && contactId.value;
  const details = !showContact && id && (detailsOpen.value || pane.value === "details");
  return (
    <div class={`shell ${details ? "with-details" : ""}`} data-pane={pane.value}>
      <Sidebar />
      {showContact ? <ContactPage userId={contactId.value!} /> : id ? <ChatView id={id} /> : <EmptyMain />}
      {details && <DetailsPane conversationId={id} />}
    </div>
  );
}

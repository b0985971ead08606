// Entry point: styles, theme, and the app mounted on #app.
import { render } from "preact";
import "./style.css";
import "./theme";
import { App } from "./app";

render(<App />, document.getElementById("app")!);

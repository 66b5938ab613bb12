from flask import Flask, jsonify, render_template, request


class JobEntrypoint:
    def perform(self) -> str:
        return "see the webview"

    def webview_app(self, base_url: str):
        """A Flask app: Racetrack passes the public prefix it is reached under."""
        app = Flask(__name__, template_folder="templates")

        @app.route(base_url + "/")
        def index():
            return render_template("index.html", base_url=base_url)

        @app.route(base_url + "/postme", methods=["POST"])
        def postme():
            return jsonify({"hello": request.json, "query": request.args.get("q")})

        return app.wsgi_app

/* Glue between the offline widget manager (embed-amd.js) and this site. Loaded after
 * require.js and before embed-amd.js on pages with saved widget state (_config.yml,
 * nb_ipywidgets_js). Two fixes, both for a book read from file:// with no network:
 *
 * 1. embed-amd.js finds its font files relative to the RequireJS URL of its module id
 *    "@jupyter-widgets/html-manager/dist/..." (by default under the page's own folder, where
 *    nothing is); map that id to this script's folder (_static/), where the fonts are shipped.
 * 2. Widget labels are typeset with the MathJax 2 call MathJax.Hub.Queue; the book runs
 *    MathJax 3, which has no Hub. Provide that one call on top of MathJax 3's typesetPromise.
 */
(function () {
  var src = document.currentScript && document.currentScript.src;
  if (src && window.require && window.require.config) {
    window.require.config({
      paths: {"@jupyter-widgets/html-manager/dist": src.substring(0, src.lastIndexOf("/"))}
    });
  }
  function shimHub() {
    var mj = window.MathJax;
    if (!mj || mj.Hub) return;
    mj.Hub = {
      Queue: function (job) {
        var el = job && job[2];
        var run = function () {
          if (window.MathJax.typesetPromise) return window.MathJax.typesetPromise(el ? [el] : undefined);
        };
        var ready = window.MathJax.startup && window.MathJax.startup.promise;
        return ready ? ready.then(run).catch(function () {}) : run();
      }
    };
  }
  shimHub();  // MathJax 3 replaces window.MathJax when its (deferred) script runs: shim again
  document.addEventListener("DOMContentLoaded", shimHub);
})();

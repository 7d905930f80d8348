// Draws every <div class="chart" data-chart="{data, layout}"> with Plotly (served by corral, no CDN).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("div.chart[data-chart]").forEach(function (el) {
    var spec = JSON.parse(el.getAttribute("data-chart"));
    var layout = Object.assign({margin: {l: 50, r: 10, t: 30, b: 40}, height: 260, title: {text: el.title}}, spec.layout || {});
    Plotly.newPlot(el, spec.data, layout, {displayModeBar: false, responsive: true});
  });
});

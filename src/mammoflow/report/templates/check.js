window.reportProblems = [];
window.addEventListener("error", function (event) {
  var target = event.target;
  if (target && target !== window && (target.src || target.href)) {
    window.reportProblems.push("could not load " + (target.alt || target.tagName));
  } else {
    window.reportProblems.push("script error: " + event.message);
  }
}, true);
window.addEventListener("load", function () {
  var images = document.images;
  for (var i = 0; i < images.length; i++) {
    if (!images[i].complete || images[i].naturalWidth === 0) {
      window.reportProblems.push("broken image: " + (images[i].alt || i));
    }
  }
  var list = document.getElementById("page-problems");
  window.reportProblems.forEach(function (text) {
    var item = document.createElement("li"); item.textContent = text; list.appendChild(item);
  });
  document.documentElement.setAttribute("data-images", String(images.length));
  document.documentElement.setAttribute("data-check", window.reportProblems.length ? "errors" : "ok");
});

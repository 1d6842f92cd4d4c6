"""Short texts in ten languages, written for these tests (not copied from anywhere)."""

TEXTS = {
    "en": "The library opens at nine in the morning and closes late in the evening. Visitors "
          "may borrow up to five books at a time and return them within three weeks.",
    "de": "Die Bibliothek öffnet um neun Uhr morgens und schließt erst spät am Abend. Besucher "
          "dürfen bis zu fünf Bücher gleichzeitig ausleihen und müssen sie innerhalb von drei "
          "Wochen zurückgeben.",
    "fr": "La bibliothèque ouvre à neuf heures du matin et ferme tard le soir. Les visiteurs "
          "peuvent emprunter jusqu'à cinq livres à la fois et doivent les rendre dans les "
          "trois semaines.",
    "es": "La biblioteca abre a las nueve de la mañana y cierra tarde por la noche. Los "
          "visitantes pueden llevarse hasta cinco libros a la vez y deben devolverlos en un "
          "plazo de tres semanas.",
    "it": "La biblioteca apre alle nove del mattino e chiude tardi la sera. I visitatori "
          "possono prendere in prestito fino a cinque libri alla volta e restituirli entro tre "
          "settimane.",
    "nl": "De bibliotheek gaat om negen uur 's ochtends open en sluit laat in de avond. "
          "Bezoekers mogen maximaal vijf boeken tegelijk lenen en moeten ze binnen drie weken "
          "terugbrengen.",
    "pt": "A biblioteca abre às nove horas da manhã e fecha tarde da noite. Os visitantes "
          "podem levar até cinco livros de cada vez e devem devolvê-los no prazo de três "
          "semanas.",
    "pl": "Biblioteka jest otwarta od dziewiątej rano i zamyka się późnym wieczorem. "
          "Czytelnicy mogą wypożyczyć jednocześnie do pięciu książek i muszą je zwrócić w "
          "ciągu trzech tygodni.",
    "fi": "Kirjasto aukeaa yhdeksältä aamulla ja sulkeutuu myöhään illalla. Kävijät voivat "
          "lainata enintään viisi kirjaa kerrallaan, ja ne on palautettava kolmen viikon "
          "kuluessa.",
    "ru": "Библиотека открывается в девять часов утра и закрывается поздно вечером. "
          "Посетители могут взять не более пяти книг одновременно и должны вернуть их в "
          "течение трёх недель.",
}
